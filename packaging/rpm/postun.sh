# gatehouse %postun: reload systemd once the unit files are gone or replaced.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
