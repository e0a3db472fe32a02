"""`python -m provision`: the provisioning tools that are not kctl commands.

    python -m provision box build [--force]      the Vagrant base box (provision/box.py)
    python -m provision vagrant bootstrap        turn the Vagrantfile's VMs into a joined cluster
    python -m provision vagrant down             stop what bootstrap installed (VMs stay)

The Vagrantfile's trigger runs `vagrant bootstrap` once the last machine is up.
"""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Flotilla provisioning: base box and the Vagrant cluster."""


@main.group()
def box() -> None:
    """The Vagrant base box."""


@box.command("build")
@click.option("--name", default="flotilla/debian12", show_default=True, help="box name (the Vagrantfile's)")
@click.option("--mirror", default=None, help="Debian mirror (default: the host's apt source)")
@click.option("--force", is_flag=True, help="rebuild even when the cached box matches the recipe")
def box_build(name: str, mirror: str | None, force: bool) -> None:
    """Build the base box from Debian packages and `vagrant box add` it (cached)."""
    from provision import box as boxes

    try:
        boxes.build(name=name, mirror=mirror, force=force)
    except boxes.BoxError as err:
        raise click.ClickException(str(err)) from err


@main.group("vagrant")
def vagrant_group() -> None:
    """The Vagrant provider: bootstrap the Vagrantfile's machines over SSH."""


@vagrant_group.command("bootstrap")
@click.option("--root", default=".", show_default=True, help="folder holding the Vagrantfile")
def vagrant_bootstrap(root: str) -> None:
    """Install Flotilla on the VMs and join them (what `vagrant up`'s trigger runs)."""
    from provision import vagrant as vagrant_provider
    from provision.provider import ProvisionError

    try:
        vagrant_provider.bootstrap(root)
    except ProvisionError as err:
        raise click.ClickException(str(err)) from err


@vagrant_group.command("down")
@click.option("--root", default=".", show_default=True, help="folder holding the Vagrantfile")
def vagrant_down(root: str) -> None:
    """Stop and remove what bootstrap installed on the VMs (the VMs themselves stay)."""
    from provision import vagrant as vagrant_provider
    from provision.provider import ProvisionError

    try:
        vagrant_provider.teardown(root)
    except ProvisionError as err:
        raise click.ClickException(str(err)) from err


if __name__ == "__main__":
    main()
