# Disaggregated prefill/decode, the gateway half (llmd_pd): a real
# redis-server; decode workers are nginx servers that echo the P/D headers
# they receive; prefill workers exist only as heartbeats (role prefill, a
# KV listener in "kv") and cache events, written the way workers write
# them (common/llmd_wire).

use lib 't/lib';
use Test::LLMD;
use Test::More;
use Data::MessagePack;
use JSON::PP;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);

my $mp = Data::MessagePack->new->prefer_integer;
my $HB = 'llmd:default:hb';
my $EV = 'llmd:default:events';
my %seq;

sub heartbeat {
    my (%o) = @_;
    my $id = $o{id};
    my %h = (v => 1, id => $id, pool => 'default', addr => $o{addr},
             model => 'm', role => $o{role} // 0, seq => ++$seq{$id},
             ts => int(time * 1000), ivl => 50, ttl => $o{ttl} // 60000,
             run => 0, wait => 0, qpt => $o{qpt} // 0,
             kvu => 1, kvt => 100, bt => 16, ptps => 1000.5,
             dms0 => 5.5, dms1 => 0.5, ttft => 10.5, bpt => $o{bpt} // 4.0,
             req => 0, ptok => 0, gtok => 0, hit => 0, ev => 1);
    $h{kv} = $o{kv} if defined $o{kv};
    redis_cmd('HSET', $HB, $id, $mp->pack(\%h));
}

sub event {
    my ($type, $addr, @keys) = @_;
    my %e = (v => 1, id => "w-$addr", addr => $addr, type => $type,
             ts => int(time * 1000), bs => 256, keys => [map { 0 + $_ } @keys]);
    redis_cmd('XADD', $EV, '*', 'e', $mp->pack(\%e));
}

sub status { decode_json(nginx_request("GET /llmd/status")->{body})->{upstreams}[0] }

sub peer_status {
    my ($st, $name) = @_;
    my ($p) = grep { $_->{name} eq $name } @{ $st->{peers} };
    return $p;
}

sub prometheus { nginx_request("GET /llmd/status?format=prometheus")->{body} }

# a completion whose canonical prompt is exactly $n bytes
my $nprompt = 0;
sub prompt_of {
    my ($n, $tag) = @_;
    $tag //= 'p' . ++$nprompt . ' ';
    return substr($tag . ('lorem ipsum dolor sit amet ' x (1 + $n / 27)), 0, $n);
}
sub completion { "POST /v1/completions\n" . encode_json({ model => 'm', max_tokens => 4, prompt => $_[0] }) }
sub body_of { (split /\n/, $_[0], 2)[1] }

# what the decode worker received: "port=... peer=... tid=..."
sub echoed {
    my ($r) = @_;
    my %e = $r->{body} =~ /(\w+)=(\S*)/g;
    return \%e;
}

# a decode worker that answers after $delay seconds
sub slow_backend {
    my ($port, $delay) = @_;
    return scripted_backend($port, sub {
        my ($c, $head) = @_;
        my ($peer) = $head =~ /^x-llmd-prefill-peer:\s*(\S+)/mi;
        my ($tid) = $head =~ /^x-llmd-transfer-id:\s*(\S+)/mi;
        sleep $delay;
        my $out = "port=$port peer=" . ($peer // '') . " tid=" . ($tid // '') . "\n";
        print $c "HTTP/1.1 200 OK\r\nContent-Length: " . length($out)
                 . "\r\nConnection: close\r\n\r\n$out";
    });
}

my ($pd1, $pd2) = (rand_port(1), rand_port(2));
my ($D1, $D2) = ("127.0.0.1:$pd1", "127.0.0.1:$pd2");
my ($P1, $P2, $P3) = map { '127.0.0.1:' . rand_port($_) } 3 .. 5;   # never dialled
my ($K1, $K2) = map { '127.0.0.1:' . rand_port($_) } 6 .. 7;        # KV listeners

my $http = <<"END";
    upstream llm {
        llmd;
        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms stale=2s allow=127.0.0.0/8;
        llmd_pd threshold=300 max_queue=1000;
    }
    log_format pd '\$llmd_pd \$llmd_prefill_peer';
    access_log \$TEST_NGINX_SERVROOT/logs/pd.log pd;
    server {
        listen 127.0.0.1:$pd1;
        listen 127.0.0.1:$pd2;
        access_log off;
        location / {
            return 200 "port=\$server_port peer=\$http_x_llmd_prefill_peer tid=\$http_x_llmd_transfer_id\\n";
        }
    }
END

my $config = <<'END';
    location /v1/ {
        llmd_debug_headers on;
        add_header X-Prompt-Bytes $llmd_prompt_bytes;
        proxy_set_header X-LLMD-Prefill-Peer $llmd_prefill_peer;
        proxy_set_header X-LLMD-Transfer-Id $llmd_transfer_id;
        proxy_pass http://llm;
    }
    location /nopd/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
    location = /llmd/status { access_log off; llmd_status; }
END

redis_start();

# --- directive parsing
{
    my @bad = (
        [ 'llmd_pd threshold=abc;', 'invalid parameter "threshold=abc"' ],
        [ 'llmd_pd max_queue=10;', '"llmd_pd" needs threshold=N or off' ],
        [ 'llmd_pd threshold=10 bogus=1;', 'invalid parameter "bogus=1"' ],
        [ 'llmd_pd threshold=10 threshold=20;', 'invalid parameter "threshold=20"' ],
        [ 'llmd_pd off threshold=10;', 'invalid parameter "off"' ],
        [ 'llmd_pd threshold=10; llmd_pd off;', '"llmd_pd" directive is duplicate' ],
        [ 'llmd_pd;', 'invalid number of arguments in "llmd_pd"' ],
    );
    for my $b (@bad) {
        my $h = "upstream llm { llmd; llmd_redis unix:/tmp/none.sock; $b->[0] server 127.0.0.1:1; }";
        my $err = nginx_start(http_config => $h, config => 'location / { proxy_pass http://llm; }');
        ok($err ne '', "refused: $b->[0]");
        like($err, qr/\Q$b->[1]\E/, "  says: $b->[1]");
        nginx_stop();
    }

    my $err = nginx_start(http_config => 'upstream llm { llmd; llmd_pd threshold=10; server 127.0.0.1:1; }',
                          config => 'location / { proxy_pass http://llm; }');
    like($err, qr/"llmd_pd" in upstream "llm" needs "llmd_redis"/, 'llmd_pd without llmd_redis is refused');
    nginx_stop();

    $err = nginx_start(http_config => "upstream llm { llmd; llmd_redis unix:/tmp/none.sock; llmd_pd off; server 127.0.0.1:1; }",
                       config => 'location / { proxy_pass http://llm; }');
    is($err, '', 'llmd_pd off is accepted');
    nginx_stop();
}

is(nginx_start(http_config => $http, config => $config, workers => 2), '', 'nginx started');

# decode workers only, plus a prefill worker that advertises no KV listener
heartbeat(id => 'd1', addr => $D1, role => 2);
heartbeat(id => 'd2', addr => $D2, role => 2);
heartbeat(id => 'p3', addr => $P3, role => 1);
sleep 0.4;

# --- 1. no usable prefill worker: local
{
    my $r = nginx_request(completion(prompt_of(4000)));
    is($r->{status}, 200, 'served');
    is($r->{headers}{'x-llmd-pd'}, 'no-prefill-peer', 'no prefill worker with a KV listener: local');
    is(echoed($r)->{peer}, '', 'the decode worker got no prefill peer');
    is(echoed($r)->{tid}, '', 'nor a transfer id');
    ok(!exists $r->{headers}{'x-llmd-prefill-peer'}, 'no X-LLMD-Prefill-Peer debug header');
    like($r->{headers}{'x-llmd-upstream'}, qr/^(?:\Q$D1\E|\Q$D2\E)$/, 'a decode worker served');
}

# prefill workers join; a hostile one is rejected
my $st = status();
my $rejected = $st->{redis}{records_rejected};
heartbeat(id => 'p1', addr => $P1, role => 1, kv => $K1);
heartbeat(id => 'p2', addr => $P2, role => 1, kv => $K2);
heartbeat(id => 'evil1', addr => '127.0.0.1:9', role => 1, kv => "10.9.9.9:7000");
heartbeat(id => 'evil2', addr => '127.0.0.1:10', role => 1, kv => "127.0.0.1:1\r\nX-Evil: 1");
sleep 0.4;
$st = status();
cmp_ok($st->{redis}{records_rejected} - $rejected, '>=', 2,
       'KV listeners outside the allow list, or not an address, are rejected');
ok(!peer_status($st, '127.0.0.1:9') && !peer_status($st, '127.0.0.1:10'),
   'and their workers never become peers');
redis_cmd('HDEL', $HB, 'evil1', 'evil2');
is(peer_status($st, $P1)->{worker}{kv_addr}, $K1, 'status: kv_addr of a prefill worker');
is(peer_status($st, $P1)->{worker}{role}, 'prefill', 'status: its role');
is(peer_status($st, $D1)->{worker}{kv_addr}, '', 'status: a decode worker has no kv_addr');
is($st->{pd}{threshold}, 300, 'status: threshold');
is($st->{pd}{max_queue}, 1000, 'status: max_queue');
my $pd0 = $st->{pd};

# --- 2. a long uncached prompt is prefilled remotely
my (%tids, %kvs);
{
    my @res = map { nginx_request(completion(prompt_of(4000))) } 1 .. 6;
    for my $r (@res) {
        my $e = echoed($r);
        $tids{ $e->{tid} }++;
        $kvs{ $e->{peer} }++;
    }
    is(scalar(grep { $_->{status} == 200 } @res), 6, 'all served');
    is(scalar(grep { ($_->{headers}{'x-llmd-pd'} // '') eq 'remote' } @res), 6, 'X-LLMD-PD: remote');
    is(join(',', sort keys %kvs), join(',', sort($K1, $K2)),
       'the decode worker was told a live prefill worker\'s KV listener (both used, idle and cold)');
    is(scalar(grep { /^[0-9a-f]{16}$/ } keys %tids), 6, 'six distinct 16-hex-digit transfer ids');
    is($res[0]{headers}{'x-llmd-prefill-peer'}, echoed($res[0])->{peer}, 'debug header = what the worker got');
    is($res[0]{headers}{'x-llmd-transfer-id'}, echoed($res[0])->{tid}, 'transfer id debug header too');
    ok((grep { echoed($_)->{port} == $pd1 } @res) && (grep { echoed($_)->{port} == $pd2 } @res),
       'decode still balanced over both decode workers');
}

# transfer ids stay unique across nginx worker processes; this gateway's
# own prefills in flight count towards max_queue (1000 tokens each here)
my $parallel_remote;
{
    my @specs = map { completion(prompt_of(4000)) } 1 .. 16;
    my @res = Test::LLMD::send_requests(\@specs, undef, 8);
    my @remote = grep { ($_->{headers}{'x-llmd-pd'} // '') eq 'remote' } @res;
    my @full = grep { ($_->{headers}{'x-llmd-pd'} // '') eq 'queue-full' } @res;
    is(@remote + @full, 16, '16 parallel requests on 2 processes: remote, or local when the queues are full');
    cmp_ok(scalar @remote, '>=', 2, scalar(@remote) . ' of them remote');
    my %t = map { echoed($_)->{tid} => 1 } @remote;
    is(scalar(grep { /^[0-9a-f]{16}$/ } keys %t), scalar @remote, 'each with its own transfer id');
    is(join('', map { echoed($_)->{tid} } @full), '', 'none for the local ones');
    $tids{$_}++ for keys %t;
    $parallel_remote = @remote;
}

# --- 3. under the threshold: local; a client's own headers never pass
{
    my $r = nginx_request(completion(prompt_of(400)),
                          "X-LLMD-Prefill-Peer: 6.6.6.6:1\nX-LLMD-Transfer-Id: ffffffffffffffff");
    is($r->{headers}{'x-llmd-pd'}, 'under-threshold', '100 tokens: under threshold=300, local');
    is(echoed($r)->{peer}, '', 'no prefill peer header reached the worker (the client\'s is dropped)');
    is(echoed($r)->{tid}, '', 'no transfer id either');
}

# bytes per token come from the decode worker's heartbeat: 2000 bytes are
# 500 tokens at 4 bytes per token (remote), 250 at 8 (local)
{
    my $r = nginx_request(completion(prompt_of(2000)));
    is($r->{headers}{'x-prompt-bytes'}, 2000, '2000 prompt bytes');
    is($r->{headers}{'x-llmd-pd'}, 'remote', '500 tokens at 4 bytes per token: remote');
    heartbeat(id => 'd1', addr => $D1, role => 2, bpt => 8);
    heartbeat(id => 'd2', addr => $D2, role => 2, bpt => 8);
    sleep 0.3;
    $r = nginx_request(completion(prompt_of(2000)));
    is($r->{headers}{'x-llmd-pd'}, 'under-threshold', '250 tokens at 8 bytes per token: local');

    # the decision is made for the decode worker that then serves: the
    # early pick holds (cold prompts tie, so a fresh pick would alternate)
    heartbeat(id => 'd2', addr => $D2, role => 2, bpt => 4);
    sleep 0.3;
    my @res = map { nginx_request(completion(prompt_of(2000))) } 1 .. 8;
    my @pairs = map { ($_->{headers}{'x-llmd-upstream'} eq $D1 ? 'd1' : 'd2') . ':'
                      . $_->{headers}{'x-llmd-pd'} } @res;
    my %kinds = map { $_ => 1 } @pairs;
    is(join(' ', sort keys %kinds), 'd1:under-threshold d2:remote',
       'served by the 8-byte worker: local; by the 4-byte one: remote (' . "@pairs" . ')');
    is(scalar(grep { echoed($_)->{peer} ne '' } @res), scalar(grep { /d2/ } @pairs),
       'and only the latter were told a prefill peer');
    heartbeat(id => 'd1', addr => $D1, role => 2);
    heartbeat(id => 'd2', addr => $D2, role => 2);
    sleep 0.3;
}

# --- 4. cached on the decode worker: local, and that worker serves it
{
    my $prompt = prompt_of(5120);                  # 20 blocks, 1280 tokens
    my @keys = prefix_keys(body_of(completion($prompt)));
    is(scalar @keys, 20, '20 prefix blocks');

    event(1, $D1, @keys[0 .. 9]);                 # half: 640 uncached
    sleep 0.2;
    my $r = nginx_request(completion($prompt));
    is($r->{headers}{'x-llmd-upstream'}, $D1, 'the decode worker holding half of it serves');
    is($r->{headers}{'x-llmd-prefix-blocks'}, '10/20', 'with 10 of 20 blocks');
    is($r->{headers}{'x-llmd-pd'}, 'remote', '640 uncached tokens: still remote');

    event(1, $D1, @keys);                         # whole: nothing to prefill
    sleep 0.2;
    my @res = map { nginx_request(completion($prompt)) } 1 .. 3;
    is(join(' ', map { $_->{headers}{'x-llmd-upstream'} } @res), "$D1 $D1 $D1",
       'the holder is the decode pick');
    is(join(' ', map { $_->{headers}{'x-llmd-pd'} } @res), join(' ', ('under-threshold') x 3),
       'cached on the decode worker: local');
    is(join('', map { echoed($_)->{peer} } @res), '', 'no prefill peer sent');

    event(2, $D1, @keys[18 .. 19]);               # it evicted the last 2: 128 + 0
    sleep 0.2;
    $r = nginx_request(completion($prompt));
    is($r->{headers}{'x-llmd-prefix-blocks'}, '18/20', '18 of 20 blocks left');
    is($r->{headers}{'x-llmd-pd'}, 'under-threshold', '128 uncached tokens: local');
    event(3, $D1);
    sleep 0.2;
}

# --- 5. prefix affinity among prefill workers
{
    my $x = prompt_of(4096);
    my $y = prompt_of(4096);
    event(1, $P1, prefix_keys(body_of(completion($x))));
    event(1, $P2, prefix_keys(body_of(completion($y))));
    sleep 0.2;
    my @xs = map { echoed(nginx_request(completion($x)))->{peer} } 1 .. 4;
    my @ys = map { echoed(nginx_request(completion($y)))->{peer} } 1 .. 4;
    is("@xs", "$K1 $K1 $K1 $K1", 'the prompt held by prefill worker 1 goes to it');
    is("@ys", "$K2 $K2 $K2 $K2", 'the one held by prefill worker 2 goes to it');

    # --- 6. load: backlog decides among cold ones, max_queue excludes
    heartbeat(id => 'p1', addr => $P1, role => 1, kv => $K1, qpt => 800);
    sleep 0.3;
    my @cold = map { echoed(nginx_request(completion(prompt_of(4000))))->{peer} } 1 .. 4;
    is("@cold", "$K2 $K2 $K2 $K2", 'a cold prompt goes to the idle prefill worker');
    @xs = map { echoed(nginx_request(completion($x)))->{peer} } 1 .. 2;
    is("@xs", "$K1 $K1", 'a held prefix outweighs a backlog under max_queue');

    heartbeat(id => 'p1', addr => $P1, role => 1, kv => $K1, qpt => 1001);
    sleep 0.3;
    @xs = map { echoed(nginx_request(completion($x)))->{peer} } 1 .. 3;
    is("@xs", "$K2 $K2 $K2", 'over max_queue even the prefix holder is skipped');

    heartbeat(id => 'p2', addr => $P2, role => 1, kv => $K2, qpt => 5000);
    sleep 0.3;
    my $r = nginx_request(completion($x));
    is($r->{headers}{'x-llmd-pd'}, 'queue-full', 'every prefill worker over max_queue: local');
    is(echoed($r)->{peer}, '', 'no prefill peer sent');
    heartbeat(id => 'p1', addr => $P1, role => 1, kv => $K1);
    heartbeat(id => 'p2', addr => $P2, role => 1, kv => $K2);
    sleep 0.3;
}

# --- 6b. prefills in flight: a slow decode worker holds two requests
{
    my $ps = rand_port(8);
    my $S = "127.0.0.1:$ps";
    my $pid = slow_backend($ps, 1.5);
    redis_cmd('HDEL', $HB, 'd1', 'd2');
    heartbeat(id => 'slow', addr => $S, role => 2);
    sleep 0.4;

    my @kids;
    for my $i (1 .. 2) {
        my $kid = fork();
        if ($kid == 0) {
            my $r = nginx_request(completion(prompt_of(4000, "slow $i ")));
            POSIX::_exit(($r->{headers}{'x-llmd-pd'} // '') eq 'remote' ? 0 : 1);
        }
        push @kids, $kid;
        sleep 0.4;
    }
    my $st = status();
    my @infl = map { peer_status($st, $_)->{worker}{prefill_inflight_tokens} } $P1, $P2;
    is("@infl", '1000 1000', 'each prefill worker has one 1000-token prefill in flight: '
       . 'the second request avoided the first one\'s backlog');
    my $ok = 0;
    for (@kids) { waitpid($_, 0); $ok++ if $? == 0 }
    is($ok, 2, 'both were prefilled remotely');
    $st = status();
    @infl = map { peer_status($st, $_)->{worker}{prefill_inflight_tokens} } $P1, $P2;
    is("@infl", '0 0', 'answered: the backlog is gone');

    kill 'TERM', $pid;
    waitpid($pid, 0);
    redis_cmd('HDEL', $HB, 'slow');
    heartbeat(id => 'd1', addr => $D1, role => 2);
    heartbeat(id => 'd2', addr => $D2, role => 2);
    sleep 0.4;
}

# --- 7. metrics
{
    my $st = status();
    my $pd = $st->{pd};
    is($pd->{remote} - $pd0->{remote}, 6 + $parallel_remote + 1 + 4 + 1 + 8 + 4 + 2 + 3 + 2,
       "remote decisions counted ($pd->{remote})");
    is($pd->{local}{under_threshold} - $pd0->{local}{under_threshold}, 6 + 4,
       'local: under threshold counted');
    is($pd->{local}{queue_full} - $pd0->{local}{queue_full}, 1 + 16 - $parallel_remote,
       'local: queue full counted');
    cmp_ok($pd->{local}{no_prefill_peer}, '>=', 1, 'local: no prefill peer counted');
    my ($a1, $a2) = map { peer_status($st, $_)->{worker}{prefill_assigned} } $P1, $P2;
    is($a1 + $a2, $pd->{remote}, "per prefill worker assignments add up ($a1 + $a2)");
    cmp_ok($a1, '>=', 4 + 2, 'prefill worker 1 got what it was picked for');
    cmp_ok($a2, '>=', 4 + 4 + 3, 'prefill worker 2 too');
    is(peer_status($st, $P1)->{worker}{prefill_inflight_tokens}
       + peer_status($st, $P2)->{worker}{prefill_inflight_tokens}, 0,
       'answered requests leave no prefill backlog behind');

    my $prom = prometheus();
    like($prom, qr/^llmd_gateway_pd_decisions_total\{upstream="llm",decision="remote",reason="over_threshold"\} $pd->{remote}$/m,
         'prometheus: remote decisions');
    like($prom, qr/^llmd_gateway_pd_decisions_total\{upstream="llm",decision="local",reason="queue_full"\} $pd->{local}{queue_full}$/m,
         'prometheus: queue-full decisions');
    like($prom, qr/^llmd_gateway_pd_prefill_assigned_total\{upstream="llm",peer="\Q$P1\E"\} $a1$/m,
         'prometheus: per prefill worker assignments');
    unlike($prom, qr/^llmd_gateway_pd_prefill_assigned_total\{upstream="llm",peer="\Q$D1\E"\}/m,
           'not for decode workers');
    SKIP: {
        skip 'promtool not installed', 1 unless -x '/usr/bin/promtool';
        my $f = servroot() . '/metrics.txt';
        open my $fh, '>', $f or die;
        print $fh $prom;
        close $fh;
        my $out = `promtool check metrics < $f 2>&1`;
        is($?, 0, 'promtool check metrics accepts it') or diag $out;
    }

    # without the proxy_set_header lines nothing is decided nor counted
    my $r = nginx_request("POST /nopd/\n" . encode_json({ prompt => prompt_of(4000) }));
    is($r->{status}, 200, 'served without the headers');
    ok(!exists $r->{headers}{'x-llmd-pd'}, 'no decision where no header asks for one');
    is(status()->{pd}{remote}, $pd->{remote}, 'and none counted');
}

# --- 8. prefill workers leave: local again
{
    redis_cmd('HDEL', $HB, 'p1', 'p2');
    sleep 0.4;
    my $r = nginx_request(completion(prompt_of(4000)));
    is($r->{headers}{'x-llmd-pd'}, 'no-prefill-peer', 'prefill workers gone: local');
    is(echoed($r)->{peer}, '', 'no prefill peer sent');
}

unlike(error_log_text(), qr/\[(alert|emerg|crit)\]/, 'no alerts');
nginx_stop();

open my $fh, '<', servroot() . '/logs/pd.log' or die;
my @log = <$fh>;
close $fh;
ok((grep { /^remote \Q$K1\E$|^remote \Q$K2\E$/ } @log), '$llmd_pd and $llmd_prefill_peer logged');
ok((grep { /^under-threshold -$/ } @log), 'local decisions logged with an empty peer');

# --- 9. transfer ids differ across restarts (a fresh random base)
{
    is(nginx_start(http_config => $http, config => $config), '', 'nginx restarted');
    heartbeat(id => 'p1', addr => $P1, role => 1, kv => $K1);
    sleep 0.4;
    my $tid = echoed(nginx_request(completion(prompt_of(4000))))->{tid};
    like($tid, qr/^[0-9a-f]{16}$/, 'a transfer id after the restart');
    ok(!$tids{$tid}, 'not one handed out before the restart');
    nginx_stop();
}

if ($ENV{TEST_NGINX_CHECK_SANITIZER}) {
    my $r = sanitizer_report();
    ok(!defined $r, 'no sanitizer report' . ($r ? ": $r" : ''));
}

redis_stop();
done_testing();
