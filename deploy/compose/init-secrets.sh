#!/usr/bin/env sh
# Writes the compose stack's passwords into ./secrets (or $1), once: existing files are
# kept, so re-running never locks the services out of their data volumes.
# Files are 0644 inside a 0700 directory: the containers run as users whose ids differ
# from yours (compose bind-mounts secret files as they are), and no other host user can
# reach them.
set -eu
dir=${1:-"$(dirname "$0")/secrets"}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

write() {  # write NAME VALUE, unless NAME exists
    if [ ! -s "$dir/$1" ]; then
        printf '%s' "$2" >"$dir/$1"
        chmod 0644 "$dir/$1"
        echo "wrote $dir/$1"
    fi
}

write redis_password "$(random)"
# The URL clicktune reads (CLICKTUNE_REDIS_URL): it embeds the Redis password.
write clicktune_redis_url "redis://:$(cat "$dir/redis_password")@redis:6379/0"
write postgres_password "$(random)"
write grafana_admin_password "$(random)"
