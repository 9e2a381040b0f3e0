#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1; start (or, on Debian as root,
# install) whichever does not. Idempotent: does nothing when all three are up.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do port_open "$port" && return 0; sleep 0.5; done
  echo "services: $name did not open port $port" >&2; return 1
}

need_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "services: installing $*" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "services: please install: $* (Debian: apt-get install $*)" >&2; exit 1
  fi
}

if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || need_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port PostgreSQL 5432
fi

if ! port_open 6379; then
  command -v redis-server >/dev/null || need_install redis-server
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/pixfleet.log
  wait_port Redis 6379
fi

if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || need_install rabbitmq-server
  rabbitmq-server -detached || true
  wait_port RabbitMQ 5672
fi
if command -v rabbitmqctl >/dev/null; then
  rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  # Jobs may run up to an hour; the broker's default consumer timeout (30 min) would close
  # the channel under a long job. Raise it at run time (persistently: infra/rabbitmq/rabbitmq.conf).
  rabbitmqctl -q eval 'application:set_env(rabbit, consumer_timeout, 7200000).' >/dev/null 2>&1 || true
fi
echo "services: PostgreSQL, Redis and RabbitMQ are up"
