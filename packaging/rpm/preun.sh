# gatehouse %preun: on erase ($1 = 0), stop the sync agent and every gateway group; on
# upgrade ($1 = 1) nothing stops.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    units=$(systemctl list-units --all --plain --no-legend 'gatehouse@*.service' \
        'gatehouse-sync.service' 2>/dev/null | awk '{print $1}')
    # shellcheck disable=SC2086 # one word per unit
    [ -n "$units" ] && systemctl stop $units >/dev/null 2>&1
fi
exit 0
