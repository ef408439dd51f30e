#!/usr/bin/env bash
# Starts a throwaway single-node Ceph (1 mon, 1 memstore OSD, radosgw; cephx off, no mgr) on 127.0.0.1 with one
# bucket: the S3 endpoint of the tests. From ../shared/recipes/ceph-rgw.md (Ceph 16.2 from Debian bookworm).
# Env (all optional): CEPH_DIR (default: a new /var/tmp/snapyard-rgw.XXXXXX), RGW_PORT and MON_PORT (default: free
#   ports), S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET (>= 3 characters).
# Installs ceph-mon ceph-osd radosgw when missing and root (else says which packages to install).
# Stdout: `export NAME=value` lines (CEPH_DIR, SNAPYARD_TEST_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), also written
# to $CEPH_DIR/env; `eval "$(scripts/services/rgw-up.sh)"`. Progress and errors go to stderr.
# Exit 3: the directory holds a running instance (left alone). Stop with CEPH_DIR=... scripts/services/rgw-down.sh (also after a failed start: it stops what was started).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
t0=$(date +%s%N)
bash "$here/../deps.sh" rgw >&2
D=${CEPH_DIR:-$(fresh_dir rgw)}; check_dir "$D"
RGW_PORT=${RGW_PORT:-$(free_port)}; MON_PORT=${MON_PORT:-$(free_port)}
AK=${S3_ACCESS_KEY:-ciaccess}; SK=${S3_SECRET_KEY:-cisecret0123456789}; BUCKET=${S3_BUCKET:-snapyard-ci}
[ -e "$D/run/pids" ] && { echo "$D already in use: run rgw-down.sh first" >&2; exit 3; }
rm -rf "$D"; mkdir -p "$D"/{mon,osd,rgw,run,log}
FSID=$(cat /proc/sys/kernel/random/uuid); OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
C="$D/ceph.conf"
# paxos propose interval: 1.7 s start instead of 14 s. ms mon client mode: without it (auth none) the OSD and radosgw
# hang in AUTH_CONNECTING. osd fast shutdown = false: memstore saves its objects on a graceful stop.
cat > "$C" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
run dir = $D/run
log file = $D/log/\$name.log
mon cluster log file = $D/log/cluster.log
keyring = $D/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon allow pool delete = true
mon warn on pool no redundancy = false
paxos propose interval = 0.05
[mon]
mon data = $D/mon
[osd]
osd data = $D/osd
osd objectstore = memstore
memstore device bytes = 8589934592
osd fast shutdown = false
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $D/rgw
rgw dynamic resharding = false
CONF
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
ceph-mon -c "$C" -i a --mkfs --monmap "$D/monmap"
setsid ceph-mon -c "$C" -i a -f >"$D/log/mon.out" 2>&1 < /dev/null & echo "mon $!" >> "$D/run/pids"
OSD_ID=$(ceph -c "$C" --connect-timeout 30 osd new "$OSD_UUID")
ceph-osd -c "$C" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1
setsid ceph-osd -c "$C" -i "$OSD_ID" -f >"$D/log/osd.out" 2>&1 < /dev/null & echo "osd $!" >> "$D/run/pids"
setsid radosgw -c "$C" -n client.rgw.a -f >"$D/log/rgw.out" 2>&1 < /dev/null & echo "rgw $!" >> "$D/run/pids"
up=0
for _ in $(seq 1 600); do   # up to ~60 s (1.3-2.6 s measured; slower while both cores are busy)
  # RGW's anonymous GET / lists no buckets; anything else on the port is not ours.
  curl -s -m 2 "http://127.0.0.1:$RGW_PORT/" 2>/dev/null | grep -q ListAllMyBucketsResult && { up=1; break; }
  while read -r n p; do kill -0 "$p" 2>/dev/null || { echo "ceph $n died, see $D/log" >&2; tail -n 5 "$D"/log/*.out >&2; exit 1; }; done < "$D/run/pids"
  sleep 0.1
done
[ $up = 1 ] || { echo "RGW did not answer on :$RGW_PORT, see $D/log" >&2; exit 1; }
radosgw-admin -c "$C" user create --uid=ci --display-name=ci --access-key="$AK" --secret-key="$SK" >/dev/null
code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT "http://127.0.0.1:$RGW_PORT/$BUCKET")
[ "$code" = 200 ] || { echo "bucket create failed: HTTP $code" >&2; exit 1; }
cat > "$D/env" <<ENV
export CEPH_DIR='$D'
export SNAPYARD_TEST_S3='s3://$BUCKET?endpoint=http://127.0.0.1:$RGW_PORT&region=us-east-1'
export AWS_ACCESS_KEY_ID='$AK'
export AWS_SECRET_ACCESS_KEY='$SK'
ENV
cat "$D/env"
echo "RGW up on http://127.0.0.1:$RGW_PORT bucket=$BUCKET (dir $D) in $(ms_since "$t0") ms" >&2
