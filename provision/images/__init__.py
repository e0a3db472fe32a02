"""Images for a cluster: OCI images as data (`oci`), the base images built from Debian packages
(`base`), `kctl image build` (`build`), kctl's local store (`store`), the OCI distribution
client (`distribution`) and the cluster registry daemon on the master (`registry`)."""
