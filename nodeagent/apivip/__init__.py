"""The API's virtual IP on a cluster with several masters (kube-vip's ARP mode): see main.py."""
