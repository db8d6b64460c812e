# End to end: a real redis-server, three real llmd-worker sim processes
# publishing their fleet state, and nginx routing on it with no server
# lines at all.  Routing follows the workers' real cache contents and queue
# lengths, and survives Redis going away and coming back.

use lib 't/lib';
use Test::LLMD;
use Test::More;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

my $worker = $ENV{LLMD_WORKER} || 'workers/build/llmd-worker';
plan skip_all => "$worker not built (make workers)" unless -x $worker;

my @pids;
my @ports = map { rand_port($_) } 1 .. 3;

sub start_workers {
    # named in the parent: a child's servroot() would carry its own pid
    my $logs = servroot();
    for my $i (0 .. 2) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            open STDOUT, '>>', "$logs.worker$i.log";
            open STDERR, '>&', \*STDOUT;
            exec $worker, '--listen', "127.0.0.1:$ports[$i]", '--backend', 'sim',
                 '--model-name', 'm', '--speed', '1', '--worker-id', "w$i",
                 '--redis', "unix://$ENV{TEST_NGINX_REDIS_SOCK}",
                 '--heartbeat-ms', '50', '--max-batch', '2';
            exit 127;
        }
        push @pids, $pid;
    }
}

sub stop_workers {
    kill 'TERM', @pids;
    waitpid($_, 0) for @pids;
    @pids = ();
}

my $me = $$;
END { stop_workers() if @pids && $$ == $me }

sub status { decode_json(nginx_request("GET /llmd/status")->{body}) }

sub alive_workers {
    my $st = status();
    return grep { $_->{worker} && $_->{worker}{alive} } @{ $st->{upstreams}[0]{peers} };
}

sub wait_for { my ($what, $cond, $secs) = @_;
    my $deadline = time + ($secs || 10);
    while (time < $deadline) { return 1 if $cond->(); sleep 0.1 }
    diag "timed out waiting for $what";
    return 0;
}

my $sys = "You are the assistant of a large support desk. Answer briefly and cite the policy. " x 16;
sub chat { my ($q, $stream, $max) = @_;
    "POST /v1/chat/completions\n"
    . encode_json({ model => 'm', max_tokens => $max // 4, stream => $stream ? JSON::PP::true : JSON::PP::false,
                    messages => [{ role => 'system', content => $sys }, { role => 'user', content => $q }] }) }

redis_start();
start_workers();

my $http = <<'END';
    upstream llm {
        llmd;
        llmd_redis unix:$TEST_NGINX_REDIS_SOCK interval=50ms stale=2s;
        llmd_predict on;
    }
END
my $config = <<'END';
    location /v1/ {
        llmd_debug_headers on;
        proxy_http_version 1.1;
        proxy_pass http://llm;
    }
    location = /llmd/status { llmd_status; }
END

is(nginx_start(http_config => $http, config => $config), '', 'nginx started');
ok(wait_for('3 workers', sub { alive_workers() == 3 }), 'three workers discovered through Redis');

my @w = alive_workers();
ok((grep { $_->{worker}{events} } @w) == 3, 'all three publish cache events');

# a worker measures its prefill rate on real work: one request each, sent
# to the workers directly so the gateway's index stays empty
for my $p (@ports) {
    system("curl -s -o /dev/null http://127.0.0.1:$p/v1/completions -H 'Content-Type: application/json' "
           . "-d '{\"model\":\"m\",\"prompt\":\"warm up\",\"max_tokens\":2}'");
}
ok(wait_for('prefill rates', sub { (grep { $_->{worker}{prefill_tps} > 0 } alive_workers()) == 3 }),
   'the workers publish their measured prefill rate');

# --- real cache contents: after one request, its worker holds the prefix
my $first = nginx_request(chat('first question', 1));
is($first->{status}, 200, 'first request served');
my $holder = $first->{headers}{'x-llmd-upstream'};
like($holder, qr/^127\.0\.0\.1:\d+$/, "served by $holder");

# the workers' CLEARED events on connect count as applied too: wait for the
# prefix index itself to hold what the first request's worker stored
ok(wait_for('the stored event', sub {
    my $st = status();
    $st->{upstreams}[0]{redis}{events_applied} > 0
        && $st->{upstreams}[0]{index}{used} > 0 }),
   'the worker published what it now holds');

my $st0 = encode_json(status());
my @next = map { nginx_request(chat("question $_", 0)) } 1 .. 3;
if (($next[0]{headers}{'x-llmd-prefix-blocks'} // '') !~ /^(\d+)\/\1$/) { diag($st0); diag(encode_json(status())); diag(join(' | ', map { "$_: " . ($next[0]{headers}{$_} // '') } sort keys %{ $next[0]{headers} })); diag("holder $holder"); }
is(join(' ', map { $_->{headers}{'x-llmd-upstream'} } @next), join(' ', ($holder) x 3),
   'requests sharing the prefix go to the worker that holds it');
like($next[0]{headers}{'x-llmd-prefix-blocks'}, qr/^(\d+)\/\1$/, 'every block matched');
ok(defined $next[0]{headers}{'x-llmd-ttft-ms'}, 'the worker reports its TTFT');

my ($port) = $holder =~ /:(\d+)$/;
my $m = nginx_request("GET /v1/models");     # keep the harness warm
my $metrics = `curl -s http://127.0.0.1:$port/metrics`;
my ($hits) = $metrics =~ /^vllm:prefix_cache_hits_total\{[^}]*\} (\d+)/m;
ok($hits && $hits > 0, "the worker really reused its cache ($hits hit tokens)");

# --- queue lengths: keep the holder busy with long generations (two run,
# the rest queue), then a new prefix avoids it
my @busy;
for my $i (1 .. 6) {
    my $pid = fork();
    if ($pid == 0) {
        # the shared prefix, then a long question of its own: the queued
        # prefill work the worker reports
        my $r = nginx_request(chat("long job $i " . ("with its own words $i " x 150), 0, 400));
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    push @busy, $pid;
}
sleep 0.6;
my $st = status();
my ($busy) = sort { $b->{inflight} <=> $a->{inflight} } @{ $st->{upstreams}[0]{peers} };
ok($busy->{inflight} >= 3, "long jobs in flight on $busy->{name}");
my $fresh = nginx_request("POST /v1/completions\n" . encode_json({ model => 'm', max_tokens => 2,
                          prompt => "an unrelated prompt " x 40 }));
isnt($fresh->{headers}{'x-llmd-upstream'}, $busy->{name}, 'a new prompt avoids the busy worker');
is($fresh->{headers}{'x-llmd-pick'}, 'predicted', 'picked on predicted latency');
waitpid($_, 0) for @busy;

# --- Redis goes away and comes back
redis_stop();
sleep 0.3;
my $ok = 0;
$ok += nginx_request(chat("during the outage $_", 0))->{status} == 200 for 1 .. 5;
is($ok, 5, 'requests keep flowing while Redis is down');
like(error_log_text(), qr/redis connection lost/, 'the outage is logged');

redis_start();
ok(wait_for('workers back', sub {
    my $st = status();
    $st->{upstreams}[0]{redis}{state} eq 'fresh' && alive_workers() == 3 }, 15),
   'after Redis returns, the workers re-register and the state is fresh');
is(nginx_request(chat('after the outage', 0))->{status}, 200, 'served after Redis came back');

unlike(error_log_text(), qr/\[(alert|emerg)\]/, 'no alerts');
if ($ENV{TEST_NGINX_CHECK_SANITIZER}) {
    my $r = sanitizer_report();
    ok(!defined $r, 'no sanitizer report' . ($r ? ": $r" : ''));
}
nginx_stop();
stop_workers();
redis_stop();
unless ($ENV{TEST_NGINX_KEEP} || !Test::More->builder->is_passing) {
    unlink servroot() . ".worker$_.log" for 0 .. 2;
}
done_testing();
