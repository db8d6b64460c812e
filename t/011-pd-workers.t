# Disaggregated prefill/decode end to end: a real redis-server, real
# llmd-worker sim processes (prefill-role workers with a KV listener,
# decode-role workers checking every KV row they read) and nginx with
# llmd_pd deciding from their heartbeats.  A long prompt is prefilled on the
# prefill worker and its pages land on the decode worker; the output is the
# one a colocated worker gives; and the failures: the prefill worker killed
# mid-transfer (recompute, or a clean error), a KV layout mismatch, the
# decode worker killed mid-transfer.

use lib 't/lib';
use Test::LLMD;
use Test::More;
use JSON::PP;
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use File::Path qw(make_path remove_tree);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

my $worker = $ENV{LLMD_WORKER} || 'workers/build/llmd-worker';
my $me = $$;
plan skip_all => "$worker not built (make workers)" unless -x $worker;

my $started = time;
my $logdir = servroot() . '.workers';
remove_tree($logdir);
make_path($logdir);

# sim: 2 layers x K,V x 2 heads x 4 dims x 1 byte
my $SIM_TOKEN_BYTES = 32;
# a slow prefill: the 8B profile at --speed 4 takes about a second for a
# 1200-word prompt, long enough to kill a worker in the middle
my @SLOW = ('--sim-profile', 'llama3-8b-h100', '--speed', '4', '--max-batch-tokens', '512');
my @FAST = ('--speed', '0');

my %workers;
my $ua = HTTP::Tiny->new(timeout => 5);

sub log_of {
    my ($w) = @_;
    open my $fh, '<', $w->{log} or return '';
    local $/;
    my $t = <$fh>;
    return $t // '';
}

sub wait_for {
    my ($what, $cond, $secs) = @_;
    my $deadline = time + ($secs || 10);
    while (time < $deadline) { return 1 if $cond->(); sleep 0.02 }
    diag "timed out waiting for $what";
    return 0;
}

# A sim worker on a free port, its stderr in $logdir/$name.log; returns once
# it listens (and, for a prefill worker, knows its KV listener).
sub start_worker {
    my ($name, @args) = @_;
    for my $attempt (1 .. 5) {
        my $port = Test::LLMD::free_port();
        my $w = { name => $name, port => $port, addr => "127.0.0.1:$port",
                  log => "$logdir/$name.log" };
        unlink $w->{log};
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            open STDOUT, '>>', $w->{log};
            open STDERR, '>&', \*STDOUT;
            exec($worker, '--listen', $w->{addr}, '--backend', 'sim',
                 '--model-name', 'm', '--worker-id', $name, @args) or POSIX::_exit(127);
        }
        $w->{pid} = $pid;
        my $exited;
        my $deadline = time + 10;
        while (time < $deadline) {
            last if log_of($w) =~ /listening on/;
            if (waitpid($pid, WNOHANG) == $pid) { $exited = 1; last }
            sleep 0.01;
        }
        if (!$exited && log_of($w) =~ /listening on/) {
            ($w->{kv}) = log_of($w) =~ /KV transfer listener on (\S+)/;
            $workers{$name} = $w;
            return $w;
        }
        kill 'KILL', $pid unless $exited;
        waitpid($pid, 0) unless $exited;
        die "worker $name did not start: " . log_of($w) unless log_of($w) =~ /cannot listen/;
    }
    die "worker $name: no free port";
}

sub stop_worker {
    my ($w, $sig) = @_;
    return unless $w->{pid};
    kill $sig || 'TERM', $w->{pid};
    waitpid($w->{pid}, 0);
    delete $w->{pid};
}

END {
    if (defined $me && $$ == $me && defined $logdir) {
        stop_worker($_, 'KILL') for values %workers;
        if ($ENV{TEST_NGINX_KEEP} || !Test::More->builder->is_passing) {
            Test::More::diag("worker logs kept in $logdir");
        } else {
            remove_tree($logdir);
        }
    }
}

sub metrics {
    my ($w) = @_;
    my $r = $ua->get("http://$w->{addr}/metrics");
    my $t = $r->{success} ? $r->{content} : '';
    my $get = sub { $t =~ $_[0] ? 0 + $1 : undef };
    return {
        landed     => $get->(qr/^llmd:kv_transfers_total\{[^}]*outcome="landed"\} (\S+)$/m),
        recomputed => $get->(qr/^llmd:kv_transfers_total\{[^}]*outcome="recomputed"\} (\S+)$/m),
        failed     => $get->(qr/^llmd:kv_transfers_total\{[^}]*outcome="failed"\} (\S+)$/m),
        received   => $get->(qr/^llmd:kv_transfer_bytes_total\{[^}]*direction="received"\} (\S+)$/m),
        sent       => $get->(qr/^llmd:kv_transfer_bytes_total\{[^}]*direction="sent"\} (\S+)$/m),
        served     => $get->(qr/^llmd:kv_transfers_served_total\{[^}]*outcome="done"\} (\S+)$/m),
        served_failed => $get->(qr/^llmd:kv_transfers_served_total\{[^}]*outcome="failed"\} (\S+)$/m),
        usage      => $get->(qr/^vllm:kv_cache_usage_perc\{[^}]*\} (\S+)$/m),
        running    => $get->(qr/^vllm:num_requests_running\{[^}]*\} (\S+)$/m),
        checked    => $get->(qr/^llmd:sim_kv_checked_tokens_total (\S+)$/m),
        mismatched => $get->(qr/^llmd:sim_kv_mismatched_tokens_total (\S+)$/m),
    };
}

sub delta {
    my ($after, $before, $k) = @_;
    return undef unless defined $after->{$k} && defined $before->{$k};
    return $after->{$k} - $before->{$k};
}

# as workers/tests/e2e/pd.mjs: n words, distinct per seed
sub words { my ($n, $seed) = @_; join ' ', map { 'w' . (($_ * 7919 + $seed) % 1000) } 0 .. $n - 1 }

sub completion_body {
    my ($prompt, $max) = @_;
    return encode_json({ model => 'm', prompt => $prompt, max_tokens => $max // 8, temperature => 0 });
}

sub completion { my ($prompt, $max, $base) = @_; "POST " . ($base // '') . "/v1/completions\n" . completion_body($prompt, $max) }

sub json_of { my $b = eval { decode_json($_[0]{body}) }; $b // {} }
sub text_of { json_of($_[0])->{choices}[0]{text} }

# the same request straight to a worker (the colocated reference)
sub direct {
    my ($w, $prompt, $max) = @_;
    my $r = $ua->post("http://$w->{addr}/v1/completions",
                      { headers => { 'Content-Type' => 'application/json' },
                        content => completion_body($prompt, $max) });
    my $b = eval { decode_json($r->{content}) } // {};
    return $b->{choices}[0]{text};
}

# a request through nginx that runs while the test does other things
sub request_start {
    my ($spec) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port(),
                                  Proto => 'tcp', Timeout => 5);
    print $s Test::LLMD::build_request($spec, '') if $s;
    return { sock => $s, start => time };
}

sub request_finish {
    my ($h, $secs) = @_;
    my $s = $h->{sock} or return { status => 0, headers => {}, body => '', raw => '' };
    my $sel = IO::Select->new($s);
    my $buf = '';
    my $deadline = time + ($secs || 15);
    while (time < $deadline) {
        next unless $sel->can_read(0.1);
        my $n = sysread($s, my $chunk, 65536);
        last unless $n;
        $buf .= $chunk;
    }
    close $s;
    my $res = Test::LLMD::parse_response($buf);
    $res->{elapsed} = time - $h->{start};
    return $res;
}

sub status_of {
    my ($upstream) = @_;
    my $st = eval { decode_json(nginx_request("GET /llmd/status")->{body}) } or return undef;
    my ($u) = grep { $_->{name} eq $upstream } @{ $st->{upstreams} };
    return $u;
}

# worker names alive in an upstream's view, as "name:role[:kv]"
sub fleet {
    my ($upstream) = @_;
    my $u = status_of($upstream) or return '';
    return join ' ', sort map { "$_->{worker}{id}:$_->{worker}{role}" . ($_->{worker}{kv_addr} ? ":$_->{worker}{kv_addr}" : '') }
                     grep { $_->{worker} && $_->{worker}{alive} } @{ $u->{peers} };
}

# the decode worker that served a response
sub served_by {
    my ($res, @ws) = @_;
    my ($w) = grep { $_->{addr} eq ($res->{headers}{'x-llmd-upstream'} // '') } @ws;
    return $w;
}

# ------------------------------------------------------------------------
# the fleet

redis_start();
my $redis = "unix://$ENV{TEST_NGINX_REDIS_SOCK}";
my @hb = ('--redis', $redis, '--heartbeat-ms', '50');

my $d1 = start_worker('d1', @FAST, @hb, '--role', 'decode', '--sim-check-kv');
my $d2 = start_worker('d2', @FAST, @hb, '--role', 'decode', '--sim-check-kv');
my $p1 = start_worker('p1', @SLOW, @hb, '--role', 'prefill', '--kv-listen', '127.0.0.1:0');
# the "strict" pool: a decode worker that fails a request whose transfer fails
my $ds = start_worker('ds', @FAST, @hb, '--pool', 'strict', '--role', 'decode',
                      '--pd-failure', 'fail', '--sim-check-kv');
my $ps = start_worker('ps', @SLOW, @hb, '--pool', 'strict', '--role', 'prefill',
                      '--kv-listen', '127.0.0.1:0');
# the reference: one colocated worker, no Redis, no gateway
my $colo = start_worker('colo', @FAST);
my @decode = ($d1, $d2);

like($p1->{kv} // '', qr/^127\.0\.0\.1:\d+$/, "the prefill worker listens for KV transfers on $p1->{kv}");

my $http = <<'END';
    upstream llm {
        llmd;
        llmd_redis unix:$TEST_NGINX_REDIS_SOCK interval=50ms stale=2s;
        llmd_pd threshold=200;
    }
    upstream strict {
        llmd;
        llmd_redis unix:$TEST_NGINX_REDIS_SOCK interval=50ms stale=2s pool=strict;
        llmd_pd threshold=200;
    }
END
my $config = <<'END';
    location /v1/ {
        llmd_debug_headers on;
        proxy_http_version 1.1;
        proxy_set_header X-LLMD-Prefill-Peer $llmd_prefill_peer;
        proxy_set_header X-LLMD-Transfer-Id $llmd_transfer_id;
        proxy_pass http://llm;
    }
    location /strict/ {
        llmd_debug_headers on;
        proxy_http_version 1.1;
        proxy_set_header X-LLMD-Prefill-Peer $llmd_prefill_peer;
        proxy_set_header X-LLMD-Transfer-Id $llmd_transfer_id;
        proxy_pass http://strict/;
    }
    location = /llmd/status { access_log off; llmd_status; }
END

is(nginx_start(http_config => $http, config => $config), '', 'nginx started');
my $want = "d1:decode d2:decode p1:prefill:$p1->{kv}";
ok(wait_for('the default pool', sub { fleet('llm') eq $want }), "the gateway sees $want")
    or diag fleet('llm');
$want = "ds:decode ps:prefill:$ps->{kv}";
ok(wait_for('the strict pool', sub { fleet('strict') eq $want }), "and in the strict pool $want")
    or diag fleet('strict');

# ------------------------------------------------------------------------
# 1, 2. a long prompt: prefilled on p1, its pages land on the decode worker

{
    my $prompt = words(300, 1);
    my @before = map { metrics($_) } @decode;
    my $r = nginx_request(completion($prompt, 16));
    is($r->{status}, 200, 'long prompt: 200') or diag $r->{raw};
    is($r->{headers}{'x-llmd-pd'}, 'remote', 'X-LLMD-PD: remote');
    is($r->{headers}{'x-llmd-prefill-peer'}, $p1->{kv}, 'X-LLMD-Prefill-Peer: the prefill worker\'s KV listener');
    like($r->{headers}{'x-llmd-transfer-id'} // '', qr/^[0-9a-f]{16}$/, 'X-LLMD-Transfer-Id: 16 hex digits');
    my $d = served_by($r, @decode);
    ok($d, 'served by a decode worker (' . ($r->{headers}{'x-llmd-upstream'} // 'none') . ')');
    $d //= $d1;
    my ($other) = grep { $_ != $d } @decode;

    my $n = json_of($r)->{usage}{prompt_tokens} // 0;
    cmp_ok($n, '>', 1000, "the prompt is $n tokens, far over threshold=200");
    my $m = metrics($d);
    is($m->{landed}, 1, "$d->{name}: one transfer landed");
    is($m->{recomputed}, 0, "$d->{name}: nothing recomputed");
    is($m->{received}, ($n - 1) * $SIM_TOKEN_BYTES,
       "$d->{name}: received the KV of every prompt token but the last ((n-1) x 32 bytes)");
    cmp_ok($m->{checked} // 0, '>=', $n - 1, "$d->{name}: --sim-check-kv verified every KV row it read ($m->{checked})");
    is($m->{mismatched}, 0, "$d->{name}: none held other bytes");
    is(metrics($other)->{landed}, 0, "$other->{name}: no transfer");

    my $pm = metrics($p1);
    is($pm->{served}, 1, 'p1: one prefill served (done)');
    is($pm->{sent}, $m->{received}, 'p1: sent what the decode worker received');
    ok(wait_for('p1 pages free', sub { (metrics($p1)->{usage} // -1) == 0 }, 3),
       'p1: its pages are released after the transfer (kv_cache_usage_perc 0)');

    my $ref = direct($colo, $prompt, 16);
    ok(defined $ref && length $ref, 'the colocated worker answers the same request');
    is(text_of($r), $ref, 'the output text equals the colocated worker\'s');
}

# ------------------------------------------------------------------------
# 3. under the threshold: local, no transfer

{
    my @before = map { metrics($_) } @decode, $p1;
    my $r = nginx_request(completion(words(10, 2), 4));
    is($r->{status}, 200, 'short prompt: 200');
    is($r->{headers}{'x-llmd-pd'}, 'under-threshold', 'X-LLMD-PD: under-threshold');
    ok(!exists $r->{headers}{'x-llmd-prefill-peer'} && !exists $r->{headers}{'x-llmd-transfer-id'},
       'no prefill peer nor transfer id');
    my @after = map { metrics($_) } @decode, $p1;
    is(join(' ', map { delta($after[$_], $before[$_], 'landed') // 'undef' } 0, 1), '0 0',
       'no decode worker took a transfer');
    is(join(' ', map { delta($after[$_], $before[$_], 'recomputed') // 'undef' } 0, 1), '0 0',
       'nor recomputed one');
    is(delta($after[2], $before[2], 'served'), 0, 'p1 prefilled nothing');
}

# ------------------------------------------------------------------------
# 4. p1 killed mid-transfer: the decode worker recomputes

{
    my $prompt = words(1200, 21);
    my %before = map { $_->{name} => metrics($_) } @decode;
    my $p1_before = metrics($p1);
    my $h = request_start(completion($prompt, 12));
    ok(wait_for('pages flowing from p1', sub { (metrics($p1)->{sent} // 0) > $p1_before->{sent} }, 5),
       'p1 is sending pages');
    my %mid = map { $_->{name} => metrics($_) } @decode;
    my $t0 = time;
    stop_worker($p1, 'KILL');
    my $r = request_finish($h);
    my $after = time - $t0;
    is($r->{status}, 200, 'p1 killed mid-transfer: the request still completes') or diag $r->{raw};
    is($r->{headers}{'x-llmd-pd'}, 'remote', 'it had been sent to p1');
    is(json_of($r)->{usage}{completion_tokens}, 12, 'all 12 tokens generated');
    cmp_ok($after, '<', 3, sprintf('the loss is noticed at once (%.2fs)', $after));
    my $d = served_by($r, @decode) // $d1;
    is(delta($mid{$d->{name}}, $before{$d->{name}}, 'landed'), 0,
       "$d->{name} was still waiting for the pages when p1 died");
    my $m = metrics($d);
    is(delta($m, $before{$d->{name}}, 'recomputed'), 1, "$d->{name}: recomputed counter 1");
    is(delta($m, $before{$d->{name}}, 'landed'), 0, "$d->{name}: nothing landed");
    is($m->{mismatched}, 0, "$d->{name}: every KV row right after the recompute");
    like(log_of($d), qr/connection to prefill worker \Q$p1->{kv}\E lost/, "$d->{name} logs the lost connection");
    is(text_of($r), direct($colo, $prompt, 12), 'and the text is the colocated worker\'s');

    # the gateway stops choosing p1 once its heartbeat is older than its TTL
    # (10 x 50 ms)
    $t0 = time;
    ok(wait_for('p1 to expire', sub { fleet('llm') eq 'd1:decode d2:decode' }, 5),
       'p1\'s heartbeat expires');
    my $gone = time - $t0;
    cmp_ok($gone, '<', 2, sprintf('within %.2fs', $gone));
    my @b = map { metrics($_) } @decode;
    my $l = nginx_request(completion(words(600, 22), 4));
    is($l->{status}, 200, 'a long prompt afterwards: 200');
    is($l->{headers}{'x-llmd-pd'}, 'no-prefill-peer', 'X-LLMD-PD: no-prefill-peer (prefilled locally)');
    ok(!exists $l->{headers}{'x-llmd-prefill-peer'}, 'no prefill peer');
    my @a = map { metrics($_) } @decode;
    is(join(' ', map { (delta($a[$_], $b[$_], 'landed') // 'u') . '/' . (delta($a[$_], $b[$_], 'recomputed') // 'u') } 0, 1),
       '0/0 0/0', 'no transfer attempted');
}

# ------------------------------------------------------------------------
# 5. --pd-failure fail: the client gets a clean error, the worker lives on

{
    my $prompt = words(1200, 31);
    my $before = metrics($ds);
    my $ps_before = metrics($ps);
    my $h = request_start(completion($prompt, 8, '/strict'));
    ok(wait_for('pages flowing from ps', sub { (metrics($ps)->{sent} // 0) > $ps_before->{sent} }, 5),
       'strict pool: ps is sending pages');
    stop_worker($ps, 'KILL');
    my $r = request_finish($h);
    is($r->{status}, 502, 'ps killed mid-transfer, --pd-failure fail: 502') or diag $r->{raw};
    like($r->{headers}{'content-type'} // '', qr{^application/json}, 'a JSON body');
    is(json_of($r)->{error}{code}, 'kv_transfer_failed', 'error.code: kv_transfer_failed');
    ok(length(json_of($r)->{error}{message} // ''), 'with a message: ' . (json_of($r)->{error}{message} // ''));
    is($r->{headers}{'x-llmd-upstream'}, $ds->{addr}, 'the decode worker\'s own answer, passed through');
    my $m = metrics($ds);
    is(delta($m, $before, 'failed'), 1, 'ds: failed counter 1');
    is(delta($m, $before, 'recomputed'), 0, 'ds: nothing recomputed');

    my $next = nginx_request(completion(words(10, 32), 4, '/strict'));
    is($next->{status}, 200, 'ds serves the next request');
    is($next->{headers}{'x-llmd-upstream'}, $ds->{addr}, '(ds itself)');
    ok(wait_for('ds pages free', sub { (metrics($ds)->{usage} // -1) == 0 }, 3), 'ds: its pages are free');
    my $log = error_log_text();
    unlike($log, qr/exited on signal|\[(alert|emerg|crit)\]/, 'nginx\'s error log: no crash, no alert');
}

# ------------------------------------------------------------------------
# 6. a prefill worker with another KV layout: the handshake is refused

my $p2 = start_worker('p2', @FAST, @hb, '--role', 'prefill', '--kv-listen', '127.0.0.1:0',
                      '--block-tokens', '32');
{
    ok(wait_for('p2 in the fleet', sub { fleet('llm') eq "d1:decode d2:decode p2:prefill:$p2->{kv}" }),
       'p2 (--block-tokens 32) joins');
    my $prompt = words(300, 41);
    my %before = map { $_->{name} => metrics($_) } @decode;
    my $r = nginx_request(completion($prompt, 8));
    is($r->{status}, 200, 'layout mismatch: the request completes') or diag $r->{raw};
    is($r->{headers}{'x-llmd-pd'}, 'remote', 'it was sent to p2');
    is($r->{headers}{'x-llmd-prefill-peer'}, $p2->{kv}, '(p2\'s KV listener)');
    my $d = served_by($r, @decode) // $d1;
    my $m = metrics($d);
    is(delta($m, $before{$d->{name}}, 'recomputed'), 1, "$d->{name}: recomputed");
    is(delta($m, $before{$d->{name}}, 'landed'), 0, "$d->{name}: nothing landed");
    like(log_of($p2), qr/refusing decode worker .*KV layout mismatch: prefill has .*block_tokens=32, decode has .*block_tokens=16/,
         'p2 logs why it refused the decode worker');
    like(log_of($d), qr/prefill worker \Q$p2->{kv}\E refused the handshake: KV layout mismatch/,
         "$d->{name} logs the refusal");
    is(text_of($r), direct($colo, $prompt, 8), 'the text is the colocated worker\'s');
    is(metrics($p2)->{served}, 0, 'p2 prefilled nothing');
}
stop_worker($p2);
ok(wait_for('p2 to leave', sub { fleet('llm') eq 'd1:decode d2:decode' }, 5), 'p2 leaves the fleet');

# ------------------------------------------------------------------------
# 7. the decode worker killed mid-transfer: the prefill worker's pages come
# back

my $p3 = start_worker('p3', @SLOW, @hb, '--role', 'prefill', '--kv-listen', '127.0.0.1:0',
                      '--pd-lease-ms', '1000');
{
    ok(wait_for('p3 in the fleet', sub { fleet('llm') eq "d1:decode d2:decode p3:prefill:$p3->{kv}" }),
       'p3 (--pd-lease-ms 1000) joins');
    my $h = request_start(completion(words(1200, 51), 4));
    my $d;
    # (kv_cache_usage_perc and num_requests_running are the engine's
    # snapshots: they lag the bytes sent a little)
    my $usage;
    ok(wait_for('a decode worker waiting for p3\'s pages', sub {
           my $pm = metrics($p3);
           return 0 unless ($pm->{sent} // 0) > 0 && ($pm->{usage} // 0) > 0;
           $usage = $pm->{usage};
           ($d) = grep { (metrics($_)->{running} // 0) == 1 } @decode;
           return defined $d }, 5),
       'p3 holds pages (kv_cache_usage_perc ' . ($usage // 0) . ') and is sending them to '
       . ($d ? $d->{name} : 'a decode worker'));
    $d //= $d1;
    my ($other) = grep { $_ != $d } @decode;
    my $t0 = time;
    stop_worker($d, 'KILL');
    ok(wait_for('p3 pages free', sub { (metrics($p3)->{usage} // -1) == 0 }, 1.5),
       'p3\'s pages are freed within the lease');
    my $freed = time - $t0;
    cmp_ok($freed, '<', 1.0, sprintf('in %.2fs', $freed));
    ok(wait_for('p3 counts it', sub { (metrics($p3)->{served_failed} // 0) == 1 }, 2),
       'p3: counted as a failed transfer');
    is(metrics($p3)->{served}, 0, 'p3: none done');
    my $r = request_finish($h);
    is($r->{status}, 502, 'the client of the killed decode worker gets 502 (a POST is not retried)')
        or diag $r->{raw};
    like(json_of($r)->{error}{message} // '', qr/./, 'as a JSON error');

    # p3 is idle now, and its heartbeat must say so: a stale backlog would
    # make the gateway see its queue as full and never give it work again
    my $queued;
    ok(wait_for('p3 to report an empty queue', sub {
           my ($pp) = grep { ($_->{worker}{id} // '') eq 'p3' } @{ (status_of('llm') // {})->{peers} // [] };
           $queued = $pp ? $pp->{worker}{queued_prefill_tokens} : undef;
           defined $queued && $queued == 0 }, 1),
       'p3\'s heartbeat reports no queued prefill tokens (' . ($queued // 'none') . ')');

    my $next = nginx_request(completion(words(300, 52), 4));
    is($next->{status}, 200, 'the next long request is served');
    is($next->{headers}{'x-llmd-upstream'}, $other->{addr}, "by $other->{name}");
    is($next->{headers}{'x-llmd-pd'}, 'remote', 'prefilled on p3');
    ok(wait_for('p3 pages free', sub { (metrics($p3)->{usage} // -1) == 0 }, 3), 'p3: pages free again');
}

my $log = error_log_text();
unlike($log, qr/exited on signal|\[(alert|emerg|crit)\]/, 'nginx: no crash, no alert');
if ($ENV{TEST_NGINX_CHECK_SANITIZER}) {
    my $r = sanitizer_report();
    ok(!defined $r, 'no sanitizer report' . ($r ? ": $r" : ''));
}
nginx_stop();
stop_worker($_) for values %workers;
redis_stop();
my $took = time - $started;
cmp_ok($took, '<', 60, sprintf('the suite took %.1fs', $took));
done_testing();
