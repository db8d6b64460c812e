// Offline checks of rendered llmd manifests (multi-document YAML).
//
//   node k8s-validate.mjs check FILE...
//       every object against its schema (kubernetes-models for core kinds,
//       @kubernetes-models/keda and /prometheus-operator for the CRDs), then
//       llmd's own rules: selectors match their pod templates, workers carry
//       app.kubernetes.io/* and llmd.ai/role labels, every serving container
//       has readiness and liveness probes and a preStop hook, GPU requests
//       equal limits, ScaledObjects and monitors point at objects that exist;
//       disaggregated prefill/decode: a prefill worker has a KV listener on a
//       fixed port that its pod exposes (containerPort named kv) and
//       advertises with the pod IP, no prefill or decode worker runs the
//       cuda backend (its GPU transports are not verified on a GPU yet),
//       where prefill workers are deployed the gateway has llmd_pd on, and
//       the prefill backlog target is under llmd_pd's max_queue.
//   node k8s-validate.mjs rules OUT.yaml FILE...
//       writes a Prometheus rules file for `promtool check rules`: the groups
//       of every PrometheusRule, plus each KEDA prometheus trigger's query
//       as a recording rule, so its PromQL is checked too.
//
// Prints one line per object and "N passed, M failed"; exit status 1 on any
// failure.  Schemas do not reject unknown fields; `helm lint --strict` and
// the rules below catch some of what they miss.
import fs from 'node:fs';
import YAML from 'yaml';

const crdPackages = {
    'keda.sh': '@kubernetes-models/keda',
    'monitoring.coreos.com': '@kubernetes-models/prometheus-operator',
};

function load(files) {
    const out = [];
    for (const file of files) {
        for (const doc of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
            if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
            const o = doc.toJSON();
            if (o && typeof o === 'object') out.push({ file, o });
        }
    }
    return out;
}

async function modelFor(o) {
    const [g, v] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
    const base = crdPackages[g] ? `${crdPackages[g]}/${g}` : (g ? `kubernetes-models/${g}` : 'kubernetes-models');
    return (await import(`${base}/${v}/${o.kind}`))[o.kind];
}

const podLabels = o => podSpecOf(o)?.metadata?.labels || {};

const matches = (sel, labels) =>
    Object.entries(sel || {}).every(([k, v]) => labels && labels[k] === v);

function podSpecOf(o) {
    return ['Deployment', 'StatefulSet', 'DaemonSet'].includes(o.kind) ? o.spec?.template : null;
}

function llmdRules(o, all) {
    const errs = [];
    const tpl = podSpecOf(o);
    if (tpl) {
        const labels = tpl.metadata?.labels || {};
        if (!matches(o.spec.selector?.matchLabels, labels))
            errs.push('selector.matchLabels does not match the pod template labels');
        for (const k of ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component'])
            if (!labels[k]) errs.push(`pod template lacks label ${k}`);
        if (labels['app.kubernetes.io/name'] === 'llmd-worker') {
            const role = labels['llmd.ai/role'];
            if (!['prefill', 'decode', 'both'].includes(role))
                errs.push(`worker without llmd.ai/role=prefill|decode|both (got ${role})`);
            if (!o.spec.selector?.matchLabels?.['llmd.ai/role'])
                errs.push('worker selector must include llmd.ai/role, or the roles overlap');
            const args = (tpl.spec.containers[0].args || []).join(' ');
            if (!args.includes(`--role=${role}`) && !args.includes(`--role ${role}`))
                errs.push(`worker --role does not match its llmd.ai/role label ${role}`);
            if (!/--redis[= ]/.test(args) || !/--advertise[= ]\S*\$\(POD_IP\)/.test(args))
                errs.push('worker must publish to Redis with --advertise $(POD_IP):PORT');
            const backend = (args.match(/--backend[= ](\S+)/) || [])[1] || 'sim';
            if (backend === 'cuda' && (role === 'prefill' || role === 'decode'))
                errs.push(`--backend cuda with --role ${role}: cuda workers keep KV pages in GPU memory and ` +
                          'their transports (cuda-ipc, nccl) are not verified on a GPU yet (run them with --role both)');
            if (role === 'prefill') {
                // decode workers connect to the advertised host with this port
                const kv = (args.match(/--kv-listen[= ]\S*:(\d+)/) || [])[1];
                const ports = (tpl.spec.containers[0].ports || []);
                if (!kv || kv === '0')
                    errs.push('prefill worker needs --kv-listen HOST:PORT with a fixed port');
                else if (!ports.some(p => p.name === 'kv' && String(p.containerPort) === kv))
                    errs.push(`prefill worker: no containerPort ${kv} named kv for its KV listener`);
            }
        }
        if (labels['app.kubernetes.io/name'] === 'llmd-gateway') {
            const env = Object.fromEntries((tpl.spec.containers[0].env || []).map(e => [e.name, e.value]));
            if (!env.LLMD_REDIS || env.LLMD_REDIS === 'off')
                errs.push('gateway must take the fleet from Redis (LLMD_REDIS)');
            if ((o.spec.replicas ?? 1) < 2)
                errs.push('gateway needs 2+ replicas');
        }
        const serving = labels['app.kubernetes.io/component'] !== 'state';
        if (serving && !tpl.spec.terminationGracePeriodSeconds)
            errs.push('terminationGracePeriodSeconds not set');
        for (const c of tpl.spec.containers || []) {
            if (!c.readinessProbe) errs.push(`container ${c.name}: no readinessProbe`);
            if (!c.livenessProbe) errs.push(`container ${c.name}: no livenessProbe`);
            if (serving && !c.lifecycle?.preStop) errs.push(`container ${c.name}: no preStop hook`);
            const req = c.resources?.requests?.['nvidia.com/gpu'];
            const lim = c.resources?.limits?.['nvidia.com/gpu'];
            if (req !== undefined && String(req) !== String(lim))
                errs.push(`container ${c.name}: nvidia.com/gpu requests must equal limits`);
        }
    }
    if (podLabels(o)['app.kubernetes.io/name'] === 'llmd-gateway' && podSpecOf(o)) {
        const env = Object.fromEntries((podSpecOf(o).spec.containers[0].env || []).map(e => [e.name, e.value]));
        const prefill = all.some(x => podSpecOf(x)?.metadata?.labels?.['llmd.ai/role'] === 'prefill');
        const pd = env.LLMD_PD_THRESHOLD && env.LLMD_PD_THRESHOLD !== 'off';
        if (prefill && !pd)
            errs.push('prefill workers are deployed but LLMD_PD_THRESHOLD is off: no request would reach them');
        if (pd && !/^\d+$/.test(env.LLMD_PD_THRESHOLD))
            errs.push(`LLMD_PD_THRESHOLD must be a number of tokens or off (got ${env.LLMD_PD_THRESHOLD})`);
    }
    if (o.kind === 'Service' && o.spec?.selector) {
        if (!all.some(x => podSpecOf(x) && matches(o.spec.selector, podSpecOf(x).metadata?.labels)))
            errs.push('selects no pod template');
    }
    if (o.kind === 'ScaledObject') {
        const t = o.spec.scaleTargetRef;
        if (!all.some(x => x.kind === (t.kind || 'Deployment') && x.metadata?.name === t.name))
            errs.push(`scaleTargetRef ${t.name} does not exist`);
        for (const tr of o.spec.triggers || [])
            if (tr.type === 'prometheus' && !(tr.metadata?.query && tr.metadata?.threshold && tr.metadata?.serverAddress))
                errs.push(`trigger ${tr.name}: query, threshold and serverAddress are required`);
        // the gateway skips prefill workers over max_queue, so a backlog
        // target at or over it can never be exceeded
        const target = all.find(x => x.kind === (t.kind || 'Deployment') && x.metadata?.name === t.name);
        const gw = all.find(x => podLabels(x)['app.kubernetes.io/name'] === 'llmd-gateway');
        if (podLabels(target)['llmd.ai/role'] === 'prefill' && gw) {
            const env = Object.fromEntries((podSpecOf(gw).spec.containers[0].env || []).map(e => [e.name, e.value]));
            const maxQueue = Number(env.LLMD_PD_MAX_QUEUE || 4 * Number(env.LLMD_PD_THRESHOLD));
            for (const tr of o.spec.triggers || [])
                if (/llmd:num_prefill_tokens_queued/.test(tr.metadata?.query || '') && !(maxQueue > Number(tr.metadata.threshold)))
                    errs.push(`trigger ${tr.name}: threshold ${tr.metadata.threshold} must be under the gateway's ` +
                              `llmd_pd max_queue ${maxQueue}, or KEDA never adds prefill pods`);
        }
    }
    if (o.kind === 'PodMonitor' || o.kind === 'ServiceMonitor') {
        const sel = o.spec.selector?.matchLabels;
        const pool = o.kind === 'PodMonitor'
            ? all.filter(podSpecOf).map(x => podSpecOf(x).metadata?.labels)
            : all.filter(x => x.kind === 'Service').map(x => x.metadata?.labels);
        if (!pool.some(l => matches(sel, l))) errs.push('selects nothing');
    }
    return errs;
}

async function check(files) {
    let ok = 0, failed = 0;
    const docs = load(files);
    const all = docs.map(d => d.o);
    for (const { file, o } of docs) {
        const id = `${file} ${o.kind}/${o.metadata?.name}`;
        const errs = [];
        try {
            const Model = await modelFor(o);
            if (!Model) throw new Error('no model');
            try { new Model(o).validate(); } catch (e) { errs.push(e.message); }
        } catch {
            errs.push(`unknown kind ${o.apiVersion} ${o.kind}`);
        }
        errs.push(...llmdRules(o, all));
        if (errs.length) { failed++; console.log(`FAIL ${id}: ${errs.join('; ')}`); }
        else { ok++; console.log(`OK   ${id}`); }
    }
    console.log(`${ok} passed, ${failed} failed`);
    return failed ? 1 : 0;
}

function rules(out, files) {
    const groups = [];
    const keda = [];
    for (const { o } of load(files)) {
        if (o.kind === 'PrometheusRule') groups.push(...(o.spec.groups || []));
        if (o.kind === 'ScaledObject')
            for (const t of o.spec.triggers || [])
                if (t.type === 'prometheus')
                    keda.push({
                        record: `keda:${o.metadata.name.replace(/[^a-zA-Z0-9_]/g, '_')}:${(t.name || 'trigger').replace(/[^a-zA-Z0-9_]/g, '_')}`,
                        expr: t.metadata.query,
                    });
    }
    if (keda.length) groups.push({ name: 'keda-triggers', rules: keda });
    fs.writeFileSync(out, YAML.stringify({ groups }));
    console.log(`${out}: ${groups.length} groups, ${keda.length} KEDA queries`);
    return 0;
}

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === 'check') process.exit(await check(rest));
else if (cmd === 'rules') process.exit(rules(rest[0], rest.slice(1)));
else { console.error('usage: k8s-validate.mjs check FILE... | rules OUT FILE...'); process.exit(2); }
