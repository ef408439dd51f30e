# Shared by the service scripts (sourced): free loopback ports and fresh directories under /var/tmp,
# so two runs on one machine (two checkouts, two CI jobs) never share a port or a directory.

# A TCP port that is free on 127.0.0.1 now (the kernel's pick; ephemeral range, so never Ceph's 6800-7300).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{process.stdout.write(String(s.address().port));s.close()})'
}

# A new empty directory /var/tmp/snapyard-NAME.XXXXXX (reachable by the postgres user, unlike /root or a 0700 /tmp dir).
fresh_dir() {
  mktemp -d "/var/tmp/snapyard-$1.XXXXXX"
}

# Refuses directories the up/down scripts must never rm -rf.
check_dir() {
  case "$1" in
    ""|/|/var|/var/tmp|/tmp|/root|/home|/usr|/etc) echo "refusing to use $1 as a service directory" >&2; return 2 ;;
  esac
}

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# For the down scripts: the directory to stop, from their argument or else the variable named $1 (checked);
# prints nothing when it does not exist (nothing to stop). Usage: D=$(down_dir VAR SCRIPT "$@") || exit $?
down_dir() {
  local var=$1 script=$2; local d=${3:-${!var:-}}
  [ -n "$d" ] || { echo "usage: $var=DIR $script (or $script DIR): the directory the up script printed" >&2; return 2; }
  check_dir "$d" || return 2
  if [ -d "$d" ]; then echo "$d"; else echo "nothing to stop in $d" >&2; fi
}
