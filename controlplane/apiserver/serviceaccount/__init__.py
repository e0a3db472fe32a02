"""Service-account identity in the apiserver: signed tokens, the TokenRequest subresource, their authentication.

- `keys.py`: the signing key (--service-account-signing-key-file) and the keys that
  verify (--service-account-key-file), with Kubernetes' key ids;
- `jwt.py`: JSON Web Tokens signed RS256 or ES256 with `cryptography`;
- `tokens.py`: the claims Kubernetes writes (iss, sub, aud, exp, iat, nbf, jti and
  `kubernetes.io`), issuing and validating them;
- `authenticator.py`: a bearer token that is a service-account JWT becomes
  `system:serviceaccount:<ns>:<name>` while its account (and the pod it is bound to) exist;
- `tokenrequest.py`: `serviceaccounts/<name>/token` (`kubectl create token`, the kubelet).
"""
