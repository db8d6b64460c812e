# Fleet state from Redis: discovered workers, precise prefix events,
# predicted latency with an SLO, other gateways' load, Redis failures,
# hostile records, and llmd_status.  A real redis-server; heartbeats and
# events are written the way workers write them (common/llmd_wire).

use lib 't/lib';
use Test::LLMD;
use Test::More;
use Data::MessagePack;
use JSON::PP;
use Time::HiRes qw(sleep time);

my $mp = Data::MessagePack->new->prefer_integer;
my $HB = 'llmd:default:hb';
my $EV = 'llmd:default:events';
my $GW = 'llmd:default:gw';
my %seq;

sub heartbeat {
    my (%o) = @_;
    my $id = $o{id};
    my %h = (v => 1, id => $id, pool => 'default', addr => $o{addr},
             model => 'm', role => $o{role} // 0, seq => ++$seq{$id},
             ts => int(time * 1000), ivl => 50, ttl => $o{ttl} // 60000,
             run => $o{run} // 0, wait => 0, qpt => $o{qpt} // 0,
             kvu => 1, kvt => 100, bt => 16, ptps => $o{ptps} // 1000.5,
             dms0 => $o{dms0} // 5.5, dms1 => $o{dms1} // 0.5, ttft => 10.5,
             req => 0, ptok => 0, gtok => 0, hit => 0, ev => $o{ev} // 0);
    redis_cmd('HSET', $HB, $id, $mp->pack(\%h));
}

sub event {
    my ($type, $addr, @keys) = @_;
    my %e = (v => 1, id => "w-$addr", addr => $addr, type => $type,
             ts => int(time * 1000), bs => 256, keys => [map { 0 + $_ } @keys]);
    redis_cmd('XADD', $EV, '*', 'e', $mp->pack(\%e));
}

sub status {
    my $r = nginx_request("GET /llmd/status");
    return decode_json($r->{body});
}

sub peer_of { $_[0]->{headers}{'x-llmd-upstream'} // '-' }

my $sys = "Fleet state system prompt that spans several prefix blocks. " x 20;
sub chat { "POST /v1/chat/completions\n"
    . qq({"model":"m","max_tokens":8,"messages":[{"role":"system","content":"$sys"},{"role":"user","content":"$_[0]"}]}) }
sub body_of { my ($spec) = @_; (split /\n/, $spec, 2)[1] }
# a prompt whose prefix keys no other prompt here shares (chat()'s are all
# its system prompt's)
sub own { "POST /v1/completions\n"
    . qq({"max_tokens":8,"prompt":"$_[0]: ) . ("a prompt of its own " x 64) . '"}' }

my $p1 = rand_port(1);
my $p2 = rand_port(2);
my $p3 = rand_port(3);
my $A = "127.0.0.1:$p1";
my $B = "127.0.0.1:$p2";
my $C = "127.0.0.1:$p3";

my $backends = <<"END";
    server {
        listen 127.0.0.1:$p1;
        listen 127.0.0.1:$p2;
        listen 127.0.0.1:$p3;
        location / { return 200 "\$server_port\\n"; }
    }
END

my $config = gateway_locations();

redis_start();

# --- 1. workers join and leave without a reload (no server lines at all)
{
    my $http = <<'END' . $backends;
    log_format pred '$llmd_peer $llmd_pick_reason $llmd_predicted_ttft';
    access_log $TEST_NGINX_SERVROOT/logs/pred.log pred;
    upstream llm {
        llmd;
        llmd_redis unix:$TEST_NGINX_REDIS_SOCK interval=50ms stale=2s allow=127.0.0.0/8;
        llmd_predict on;
    }
END
    is(nginx_start(http_config => $http, config => $config), '', 'nginx started');

    my $r = nginx_request(chat('before any worker'));
    is($r->{status}, 502, 'no worker registered yet: 502');
    like($r->{body}, qr/"type":"server_error"/, 'as an OpenAI error');

    heartbeat(id => 'a', addr => $A);
    sleep 0.4;
    my @peers = map { peer_of(nginx_request(chat("q$_"))) } 1 .. 3;
    is("@peers", "$A $A $A", 'worker a discovered from its heartbeat');

    heartbeat(id => 'b', addr => $B);
    heartbeat(id => 'a', addr => $A);   # the next beat: a's backlog is done
    sleep 0.4;
    my %seen;
    for my $i (1 .. 6) { my $r = nginx_request("POST /v1/completions\n{\"prompt\":\"distinct $i " . ("z" x 300) . "\"}"); $seen{ peer_of($r) }++ }
    is(join(',', sort keys %seen), join(',', sort($A, $B)), 'worker b joined: both serve');

    # predicted routing: a is swamped with queued prefill, b is idle
    heartbeat(id => 'a', addr => $A, qpt => 500000);
    heartbeat(id => 'b', addr => $B);
    sleep 0.3;
    @peers = map { peer_of(nginx_request(chat("pred$_"))) } 1 .. 3;
    is("@peers", "$B $B $B", 'lowest predicted TTFT wins');

    # a worker that stops sending heartbeats leaves after its TTL
    heartbeat(id => 'a', addr => $A, ttl => 200);
    sleep 0.5;
    %seen = ();
    $seen{ peer_of(nginx_request("POST /v1/completions\n{\"prompt\":\"after $_ " . ("y" x 300) . "\"}")) }++ for 1 .. 4;
    is(join(',', keys %seen), $B, 'silent worker a left after its TTL');

    # a worker whose first cache event arrives before its first heartbeat
    # (it connected to Redis and published CLEARED, its heartbeat is due)
    # is a discovered worker all the same once the heartbeat comes
    event(3, $C);
    sleep 0.3;
    heartbeat(id => 'c', addr => $C);
    heartbeat(id => 'b', addr => $B, qpt => 500000);
    sleep 0.3;
    @peers = map { peer_of(nginx_request(chat("late$_"))) } 1 .. 3;
    is("@peers", "$C $C $C", 'a worker seen first through an event serves once its heartbeat arrives');
    heartbeat(id => 'c', addr => $C, ttl => 200);
    heartbeat(id => 'b', addr => $B);
    sleep 0.5;
    my ($pc) = grep { $_->{name} eq $C } @{ status()->{upstreams}[0]{peers} };
    is($pc->{source}, 'discovered', 'status: c was discovered');

    my $st = status();
    my ($pa) = grep { $_->{name} eq $A } @{ $st->{upstreams}[0]{peers} };
    is($pa->{source}, 'discovered', 'status: a was discovered');
    is($pa->{worker}{alive}, JSON::PP::false, 'status: a is not alive');
    is($st->{upstreams}[0]{redis}{state}, 'fresh', 'status: redis fresh');

    nginx_stop();
    open my $fh, '<', servroot() . '/logs/pred.log' or die;
    my @pred = grep { /predicted/ } <$fh>;
    close $fh;
    ok(@pred >= 3, 'picks logged as predicted');
    like($pred[0], qr/^127\.0\.0\.1:\d+ predicted \d+\.\d$/, '$llmd_predicted_ttft logged');
    redis_cmd('DEL', $HB);
}

# --- 2. llmd_slo drops the peer predicted to miss the ITL target
for my $slo (0, 1) {
    my $http = <<"END" . $backends;
    upstream llm {
        llmd;
        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms;
        @{[ $slo ? 'llmd_slo ttft=10s itl=50ms;' : 'llmd_predict on;' ]}
    }
END
    is(nginx_start(http_config => $http, config => $config), '', "nginx (slo=$slo)");
    # a: quick to first token but a slow, crowded decode; b: the opposite
    heartbeat(id => 'a', addr => $A, run => 100, dms0 => 20, dms1 => 1.5, qpt => 0);
    heartbeat(id => 'b', addr => $B, run => 0, dms0 => 5, dms1 => 0.5, qpt => 2000);
    sleep 0.3;
    my $r = nginx_request(chat("slo"));
    is(peer_of($r), $slo ? $B : $A,
       $slo ? 'with llmd_slo itl=50ms the crowded peer is excluded'
            : 'without an SLO the lowest TTFT wins');
    is($r->{headers}{'x-llmd-pick'}, 'predicted', 'pick reason predicted');
    nginx_stop();
    redis_cmd('DEL', $HB);
}

# --- 3. precise prefix events: stored moves affinity, removed ends it
{
    my $http = <<"END" . $backends;
    upstream llm {
        llmd;
        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms stale=1s allow=127.0.0.1/32;
        server $A;
        server $B;
    }
END
    is(nginx_start(http_config => $http, config => $config), '', 'nginx with server lines');
    # the previous block's nginx published its load as it stopped; for a
    # couple of seconds it would count as another gateway's, and a holder
    # with a request in flight there is no better than a home
    redis_cmd('DEL', $GW);
    heartbeat(id => 'a', addr => $A, ev => 1);
    heartbeat(id => 'b', addr => $B, ev => 1);
    sleep 0.3;

    my $req = chat('what does b hold?');
    my @keys = prefix_keys(body_of($req));
    ok(@keys >= 4, scalar(@keys) . ' prefix keys');

    event(1, $B, @keys);           # b stored the whole prompt
    sleep 0.2;
    my $r = nginx_request($req);
    is(peer_of($r), $B, 'stored event: routed to the worker holding it');
    is($r->{headers}{'x-llmd-prefix-blocks'}, scalar(@keys) . '/' . scalar(@keys),
       'all blocks matched');

    # their heartbeats came before nginx's first request: server lines all
    # the same, not also discovered peers (candidates twice over)
    my $st0 = status();
    is(join(' ', sort map { "$_->{name}=$_->{source}" } @{ $st0->{upstreams}[0]{peers} }),
       join(' ', sort("$A=server", "$B=server")), 'server lines heard from first are not discovered peers');

    event(1, $A, @keys);           # now both hold it ...
    event(2, $B, @keys);           # ... and b evicted it
    sleep 0.2;
    $r = nginx_request($req);
    is(peer_of($r), $A, 'removed event: affinity moves to the remaining holder');

    event(3, $A);                  # a restarted: holds nothing
    sleep 0.2;
    $r = nginx_request($req);
    like($r->{headers}{'x-llmd-prefix-blocks'}, qr/^0\//, 'cleared event: no worker holds it');

    # --- 3b. an evicted prefix keeps its home: with nobody holding it, it
    # goes back to the worker that had it, not wherever load says
    my $req3 = own('where was this prefix?');
    my @keys3 = prefix_keys(body_of($req3));
    event(1, $A, @keys3);          # a stored it ...
    event(2, $A, @keys3);          # ... and evicted it: nobody holds it
    sleep 0.2;
    my @home = map { nginx_request($req3) } 1 .. 4;
    is(join(' ', map { peer_of($_) } @home), "$A $A $A $A",
       'removed everywhere: the prefix still goes to its home, a');
    like($home[0]{headers}{'x-llmd-prefix-blocks'}, qr/^0\//,
         'no block counted as held');
    is($home[0]{headers}{'x-llmd-pick'}, 'home', 'pick reason home');

    event(1, $B, @keys3);          # b stores it
    sleep 0.2;
    $r = nginx_request($req3);
    is(peer_of($r), $B, 'a worker that holds it wins over a mere home');
    is($r->{headers}{'x-llmd-prefix-blocks'}, scalar(@keys3) . '/' . scalar(@keys3),
       'its blocks matched');
    is($r->{headers}{'x-llmd-pick'}, 'affinity', 'pick reason affinity');

    # a home does not outweigh load: another gateway's 40 requests on a
    my $req4 = own('a home that is busy');
    my @keys4 = prefix_keys(body_of($req4));
    event(1, $A, @keys4);
    event(2, $A, @keys4);
    redis_cmd('DEL', $GW);
    redis_cmd('HSET', $GW, 'busy-gateway', $mp->pack({
        v => 1, id => 'busy-gateway', seq => 1, ts => int(time * 1000),
        peers => [{ addr => $A, n => 40, tok => 40000 }] }));
    sleep 0.3;
    $r = nginx_request($req4);
    is(peer_of($r), $B, 'an overloaded home is passed over');
    is($r->{headers}{'x-llmd-pick'}, 'balance', 'by the imbalance switch');
    redis_cmd('DEL', $GW);
    sleep 0.3;

    my $st = status();
    ok($st->{upstreams}[0]{redis}{events_applied} >= 4, 'events counted');

    # --- 4. hostile and malformed records are rejected and counted
    my $before = $st->{upstreams}[0]{redis}{records_rejected};
    redis_cmd('HSET', $HB, 'junk', "\x93\x01\x02");
    redis_cmd('HSET', $HB, 'huge', "\xdd\xff\xff\xff\xff");
    redis_cmd('HSET', $HB, 'evil', $mp->pack({v => 1, id => 'evil', addr => '10.9.9.9:80', seq => 1, ptps => 1.0}));
    redis_cmd('HSET', $HB, 'future', $mp->pack({v => 7, id => 'future', addr => '127.0.0.1:1'}));
    redis_cmd('XADD', $EV, '*', 'e', "not msgpack");
    sleep 0.3;
    $st = status();
    cmp_ok($st->{upstreams}[0]{redis}{records_rejected} - $before, '>=', 5,
           'malformed, oversized, unknown-version and foreign records rejected');
    ok(!(grep { $_->{name} =~ /10\.9\.9\.9/ } @{ $st->{upstreams}[0]{peers} }),
       'an address outside the allow list never becomes a peer')
        or diag explain $st;
    is(nginx_request($req)->{status}, 200, 'routing unaffected');

    # --- 5. another gateway's load counts (gateways route as one)
    redis_cmd('HDEL', $HB, 'junk', 'huge', 'evil', 'future');
    # only this record: the previous block's nginx published its own load
    # moments ago, and counts for a couple of seconds as a live gateway
    redis_cmd('DEL', $GW);
    my %gw = (v => 1, id => 'other-gateway', seq => 1, ts => int(time * 1000),
              peers => [{ addr => $B, n => 40, tok => 40000 }]);
    redis_cmd('HSET', $GW, 'other-gateway', $mp->pack(\%gw));
    heartbeat(id => 'a', addr => $A, ev => 1, ptps => 0);   # no prediction data
    heartbeat(id => 'b', addr => $B, ev => 1, ptps => 0);
    sleep 0.3;
    my @peers = map { peer_of(nginx_request("POST /v1/completions\n{\"prompt\":\"gw $_ " . ("x" x 300) . "\"}")) } 1 .. 4;
    is("@peers", "$A $A $A $A", "the other gateway's 40 requests on b send ours to a");
    $st = status();
    my ($pb) = grep { $_->{name} eq $B } @{ $st->{upstreams}[0]{peers} };
    is($pb->{remote_inflight}, 40, 'status shows the remote load');
    my $ours = redis_cmd('HKEYS', $GW);
    ok((grep { $_ ne 'other-gateway' } @$ours), 'this gateway publishes its own load record');

    # --- 5b. approximate placements are shared between gateways: workers
    # that send no events are placed by what any gateway sent them
    heartbeat(id => 'a', addr => $A, ev => 0, ptps => 0);
    heartbeat(id => 'b', addr => $B, ev => 0, ptps => 0);
    redis_cmd('DEL', $GW);
    sleep 0.3;
    my $req2 = own('placed by another gateway');
    # gateways share their index's keys, salted with the model ('m', the
    # only one the fleet serves, which requests without one get)
    my @keys2 = prefix_keys(body_of($req2), 256, 'm');
    my %pl = (v => 1, id => 'other-gateway', addr => $B, type => 1,
              ts => int(time * 1000), bs => 256, keys => [map { 0 + $_ } @keys2]);
    redis_cmd('XADD', 'llmd:default:placements', '*', 'e', $mp->pack(\%pl));
    sleep 0.3;
    $r = nginx_request($req2);
    is(peer_of($r), $B, "another gateway's placement gives affinity");
    is($r->{headers}{'x-llmd-prefix-blocks'}, scalar(@keys2) . '/' . scalar(@keys2),
       'all its blocks matched');

    nginx_request(chat('placed by this gateway'));
    sleep 0.3;
    my $entries = redis_cmd('XRANGE', 'llmd:default:placements', '-', '+');
    my @ours = grep { my %e = @{ $_->[1] }; my $ev = $mp->unpack($e{e}); $ev->{id} ne 'other-gateway' } @$entries;
    ok(@ours >= 1, 'this gateway publishes its own placements');

    # --- 6. Redis goes away: requests keep flowing on the last known state
    redis_stop();
    sleep 0.3;
    my $ok = 0;
    $ok += nginx_request("POST /v1/completions\n{\"prompt\":\"down $_\"}")->{status} == 200 for 1 .. 5;
    is($ok, 5, 'requests served while redis is down');
    sleep 1.5;      # past stale=1s
    my $log = error_log_text();
    my @lost = $log =~ /redis connection lost/g;
    is(scalar @lost, 1, 'the outage is logged once, not on every retry');
    like($log, qr/fleet state from redis is stale/, 'the stale transition is logged');
    $ok = 0;
    $ok += nginx_request("POST /v1/completions\n{\"prompt\":\"stale $_\"}")->{status} == 200 for 1 .. 5;
    is($ok, 5, 'requests served on local state once stale');

    redis_start();
    heartbeat(id => 'a', addr => $A, ev => 1);
    heartbeat(id => 'b', addr => $B, ev => 1);
    my $deadline = time + 8;
    while (time < $deadline) {
        last if error_log_text() =~ /redis connected.*\n(?s:.*)redis connected/;
        sleep 0.1;
    }
    like(error_log_text(), qr/redis connected(?s:.*)connection lost(?s:.*)redis connected/,
         'reconnected after redis came back');
    sleep 0.3;
    $st = status();
    is($st->{upstreams}[0]{redis}{state}, 'fresh', 'fresh again');

    # prometheus text
    $r = nginx_request("GET /llmd/status?format=prometheus");
    like($r->{body}, qr/^llmd_gateway_requests_total\{upstream="llm",peer="\Q$A\E"\} \d+$/m,
         'prometheus: requests per peer');
    like($r->{body}, qr/^llmd_gateway_redis_rejected_records_total\{upstream="llm"\} \d+$/m,
         'prometheus: rejected records');
    SKIP: {
        skip 'promtool not installed', 1 unless -x '/usr/bin/promtool';
        my $f = servroot() . '/metrics.txt';
        open my $fh, '>', $f or die;
        print $fh $r->{body};
        close $fh;
        my $out = `promtool check metrics < $f 2>&1`;
        is($?, 0, 'promtool check metrics accepts it') or diag $out;
    }

    unlike(error_log_text(), qr/\[(alert|emerg)\]/, 'no alerts');
    nginx_stop();
    unlike(error_log_text(), qr/open socket .* left in connection/,
           'redis connections closed on exit');
}

if ($ENV{TEST_NGINX_CHECK_SANITIZER}) {
    my $r = sanitizer_report();
    ok(!defined $r, 'no sanitizer report' . ($r ? ": $r" : ''));
}

redis_stop();
done_testing();
