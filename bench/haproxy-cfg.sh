# shellcheck shell=bash
# Sourced by bench/run.sh, bench/ab.sh and bench/instructions.sh: one HAProxy configuration
# for every comparison, so the figures of the three are of the same proxy setup.

# haproxy_cfg NBTHREAD MAXCONN BACKEND_PORT BIND...: HAProxy in HTTP mode in front of the nginx
# backend on 127.0.0.1:BACKEND_PORT, one `bind` line per further argument, keep-alive on both
# sides with bench/run.sh's timeouts.
haproxy_cfg() {
  local threads=$1 maxconn=$2 backend=$3 b
  shift 3
  cat <<EOF
global
  nbthread $threads
  maxconn $maxconn
  ssl-server-verify none
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
frontend fe
EOF
  for b in "$@"; do printf '  bind %s\n' "$b"; done
  printf '  default_backend be\nbackend be\n  server s1 127.0.0.1:%s\n' "$backend"
}
