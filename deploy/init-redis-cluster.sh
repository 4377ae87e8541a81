#!/bin/sh
# One-shot: form the Redis Cluster of docker-compose.cluster.yml (service redis-cluster-init, image redis:7) from
# six empty nodes, one replica per primary, and wait until every node serves every slot.
# Idempotent: a cluster that already holds all 16384 slots (its state survives in the nodes' volumes) is left as
# it is; the script then only waits for it to be ok. A cluster holding only some slots is an error to repair by
# hand (`redis-cli --cluster check` / `--cluster fix`): creating over it would fail anyway.
#
# Env: REDIS_CLUSTER_NODES (required): comma-separated host:port of all six nodes, as the services get it.
set -eu

nodes="${REDIS_CLUSTER_NODES:?REDIS_CLUSTER_NODES must be set}"
nodes=$(echo "$nodes" | tr ',' ' ')

cli() { # cli HOST:PORT ARGS...
  addr=$1; shift
  redis-cli -h "${addr%:*}" -p "${addr##*:}" "$@"
}

info_field() { # info_field HOST:PORT FIELD -> value from CLUSTER INFO
  cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# The nodes are healthy (they answer PING) before this runs; retry a little anyway.
for node in $nodes; do
  i=0
  until cli "$node" ping 2>/dev/null | grep -q PONG; do
    i=$((i + 1))
    if [ "$i" -ge 30 ]; then
      echo "init-redis-cluster: $node does not answer PING after 30 s" >&2
      exit 1
    fi
    sleep 1
  done
done

first=${nodes%% *}
assigned=$(info_field "$first" cluster_slots_assigned)
case "$assigned" in
  16384)
    echo "init-redis-cluster: the cluster already exists ($(info_field "$first" cluster_known_nodes) nodes)" ;;
  0)
    # CLUSTER MEET takes addresses: resolve each host on this network (the nodes announce the same addresses).
    addrs=""
    for node in $nodes; do
      ip=$(getent ahostsv4 "${node%:*}" | awk '{print $1; exit}')
      if [ -z "$ip" ]; then
        echo "init-redis-cluster: cannot resolve ${node%:*}" >&2
        exit 1
      fi
      addrs="$addrs $ip:${node##*:}"
    done
    echo "init-redis-cluster: creating the cluster from$addrs"
    # shellcheck disable=SC2086 # one argument per node
    redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes ;;
  *)
    echo "init-redis-cluster: $first holds ${assigned:-no answer for} of 16384 slots: a half-made cluster." >&2
    echo "  Inspect it with: redis-cli --cluster check $first" >&2
    exit 1 ;;
esac

# Done when every node says ok: right after creation the primaries take a moment, and replicas still sync.
for node in $nodes; do
  i=0
  until [ "$(info_field "$node" cluster_state)" = "ok" ]; do
    i=$((i + 1))
    if [ "$i" -ge 60 ]; then
      echo "init-redis-cluster: $node is not cluster_state:ok after 30 s" >&2
      cli "$node" cluster info >&2 || true
      exit 1
    fi
    sleep 0.5
  done
done
echo "init-redis-cluster: cluster_state:ok on all nodes"
