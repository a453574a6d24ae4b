# gatehouse %pre: the system user and group, before the files they own are unpacked.
if ! getent passwd gatehouse >/dev/null; then
    getent group gatehouse >/dev/null || groupadd -r gatehouse
    useradd -r -g gatehouse -d /var/lib/gatehouse -s /sbin/nologin \
        -c "gatehouse gateway appliance" gatehouse
fi
exit 0
