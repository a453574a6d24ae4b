# gatehouse %post: directories and their owners, then a systemd reload. Nothing is started or
# restarted: enabling a gateway group (`systemctl enable --now gatehouse@<group>`) and
# restarting after an upgrade are the administrator's decisions.
# Releases: written by gatehouse-sync, read by the gateway groups, nobody else.
install -d -o gatehouse -g gatehouse -m 0750 /var/lib/gatehouse /var/lib/gatehouse/releases
# Private keys: readable by the group gatehouse, writable by root only.
install -d -o root -g gatehouse -m 0750 /etc/gatehouse/credentials
if [ -d /run/systemd/system ]; then
    systemd-tmpfiles --create gatehouse.conf >/dev/null 2>&1 || :
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
