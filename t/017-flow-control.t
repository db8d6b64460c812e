# Flow control at the gateway (llmd_queue, llmd_saturation, llmd_priority,
# llmd_fairness): priority order and fair share while saturated, shedding,
# the maximum wait, a client leaving while queued, one queue for all worker
# processes, reload with requests queued, and Redis going away while
# saturated.  The backends are nginx locations that take a while to answer
# and say which request they served, in the order they began it.

use lib 't/lib';
use Test::LLMD;
use Test::More;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use Data::MessagePack;
use Time::HiRes qw(sleep time);

my $mp = Data::MessagePack->new->prefer_integer;
my $b1 = rand_port(1);
my $B1 = "127.0.0.1:$b1";

sub completion { my ($id) = @_;
    "POST /v1/completions\n" . qq({"model":"m","max_tokens":4,"prompt":"request $id"}) }

# the backend: holds each request $secs, logs when it ended it (one at a
# time, that is the order it began them)
sub backend { my ($secs) = @_; <<"END" }
    log_format ended '\$msec \$http_x_id';
    server {
        listen $B1;
        access_log \$TEST_NGINX_SERVROOT/logs/backend.log ended;
        location / { echo_sleep $secs; echo "served \$http_x_id"; }
    }
END

my $main = "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;\n";

my $locations = <<'END';
    location /v1/ {
        access_log $TEST_NGINX_SERVROOT/logs/flow.log flow;
        llmd_priority $http_x_priority;
        llmd_fairness $http_x_tenant;
        proxy_set_header X-Id $http_x_id;
        proxy_pass http://llm;
    }
    location = /llmd/status { llmd_status; }
END

sub upstream { my ($extra) = @_; <<"END" }
    log_format flow '\$http_x_id \$llmd_admission \$llmd_queue_ms \$llmd_priority \$llmd_fairness \$pid';
    upstream llm {
        llmd;
        server $B1;
$extra
    }
END

sub read_log { my ($name) = @_;
    open my $fh, '<', servroot() . "/logs/$name" or return ();
    return map { chomp; [split / /] } <$fh>;
}

# the ids in the order the backend served them (its log line is written a
# moment after the response)
sub served_order { sleep 0.1; map { $_->[1] } sort { $a->[0] <=> $b->[0] } read_log('backend.log') }

# Opens one connection per [id, headers] and sends its request, $gap
# seconds apart; returns the sockets, to collect() later.
sub launch {
    my ($gap, @reqs) = @_;
    my @socks;
    for my $r (@reqs) {
        my ($id, $hdrs) = @$r;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => server_port(), Proto => 'tcp')
            or die "connect: $!";
        my $raw = Test::LLMD::build_request(completion($id), "X-Id: $id\n" . ($hdrs // ''));
        syswrite($s, $raw);
        push @socks, [$id, $s];
        sleep $gap if $gap;
    }
    return @socks;
}

sub collect {
    my ($timeout, @socks) = @_;
    my %res;
    my %buf;
    my $sel = IO::Select->new(map { $_->[1] } @socks);
    my %id = map { fileno($_->[1]) => $_->[0] } @socks;
    my $deadline = time + ($timeout || 15);
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(0.1)) {
            my $n = sysread($s, my $chunk, 65536);
            if (!$n) { $sel->remove($s); close $s; next }
            $buf{ $id{ fileno $s } } .= $chunk;
        }
    }
    $res{$_} = Test::LLMD::parse_response($buf{$_} // '') for values %id;
    return \%res;
}

# the end of a section: nothing alarming in the error log, no sanitizer
# report (the next nginx_start() clears the log)
sub section_clean { my ($what) = @_;
    unlike(error_log_text(), qr/\[(alert|emerg)\]/, "$what: no alerts");
    if ($ENV{TEST_NGINX_CHECK_SANITIZER}) {
        my $r = sanitizer_report();
        ok(!defined $r, "$what: no sanitizer report" . ($r ? ": $r" : ''));
    }
}

sub status { decode_json(nginx_request("GET /llmd/status")->{body}) }
sub flow_of { status()->{upstreams}[0]{flow} }
sub prio { my ($st, $p) = @_; (grep { $_->{priority} == $p } @{ $st->{priorities} })[0] // {} }

# --- 1. strict priority between priorities
{
    my $http = backend(0.3) . upstream("        llmd_queue size=10 timeout=20s;\n"
                                      . "        llmd_saturation inflight=1;\n");
    is(nginx_start(main_config => $main, http_config => $http, config => $locations),
       '', 'nginx started');

    my @socks = launch(0.1, ['blocker', "X-Priority: 0\n"]);
    push @socks, launch(0.02, map { ["lo$_", "X-Priority: 0\n"], ["hi$_", "X-Priority: 5\n"] } 1 .. 3);
    my $res = collect(15, @socks);
    is(scalar(grep { $res->{$_}{status} == 200 } keys %$res), 7, 'every request served');
    my @order = served_order();
    is($order[0], 'blocker', 'the first request went at once');
    is(join(' ', map { /^(hi|lo)/ ? $1 : $_ } @order[1 .. 6]), 'hi hi hi lo lo lo',
       'while saturated, the higher priority goes first') or diag "@order";
    is(join(' ', @order[4 .. 6]), 'lo1 lo2 lo3', 'first come first served within one');

    my %adm = map { $_->[0] => $_->[1] } read_log('flow.log');
    is($adm{blocker}, 'admitted', '$llmd_admission: admitted');
    is($adm{hi1}, 'queued', '$llmd_admission: queued');
    my ($hi1) = grep { $_->[0] eq 'hi1' } read_log('flow.log');
    cmp_ok($hi1->[2], '>=', 150, '$llmd_queue_ms: the wait behind the blocker');
    is($hi1->[3], 5, '$llmd_priority');

    my $f = flow_of();
    is($f->{queued}, 0, 'status: nothing left queued');
    is($f->{granted}, 0, 'status: no room left reserved');
    is(prio($f, 5)->{queued}, 3, 'status: three queued at priority 5');
    is(prio($f, 0)->{admitted}, 1, 'status: one admitted at once at priority 0');
    my $prom = nginx_request("GET /llmd/status?format=prometheus")->{body};
    like($prom, qr/^llmd_gateway_admissions_total\{upstream="llm",priority="5",outcome="queued"\} 3$/m,
         'Prometheus: admissions by outcome');
    like($prom, qr/^llmd_gateway_queue_wait_seconds_count\{upstream="llm",priority="5"\} 3$/m,
         'Prometheus: wait-time histogram');
    like($prom, qr/^llmd_gateway_saturated\{upstream="llm"\} 0$/m, 'Prometheus: not saturated now');
    section_clean('priority order');
}

# --- 2. fair share between a noisy and a quiet tenant
{
    unlink servroot() . '/logs/backend.log';
    my $http = backend(0.2) . upstream("        llmd_queue size=20 timeout=20s;\n"
                                      . "        llmd_saturation inflight=1;\n");
    is(nginx_start(main_config => $main, http_config => $http, config => $locations),
       '', 'nginx started');
    my @socks = launch(0.1, ['noisy0', "X-Tenant: noisy\n"]);
    push @socks, launch(0.01, (map { ["noisy$_", "X-Tenant: noisy\n"] } 1 .. 8),
                              (map { ["quiet$_", "X-Tenant: quiet\n"] } 1 .. 2));
    my $res = collect(20, @socks);
    is(scalar(grep { $res->{$_}{status} == 200 } keys %$res), 11, 'every request served');
    my @order = served_order();
    my @quiet = grep { $order[$_] =~ /^quiet/ } 0 .. $#order;
    cmp_ok($quiet[-1], '<=', 4,
           'the quiet tenant, queued behind eight, is served within the first five')
        or diag "@order";
    my $f = flow_of();
    my ($q) = grep { $_->{id} eq 'quiet' } @{ $f->{fairness} };
    is($q->{admitted}, 2, 'status: admissions per fairness id');
    section_clean('fair share');
}

# --- 3. sheddable requests at saturation; 4. the maximum wait
{
    unlink servroot() . '/logs/backend.log';
    my $http = backend(1.2) . upstream("        llmd_queue size=10 timeout=400ms;\n"
                                      . "        llmd_saturation inflight=1;\n");
    is(nginx_start(main_config => $main, http_config => $http, config => $locations),
       '', 'nginx started');
    my @socks = launch(0.1, ['blocker', '']);
    push @socks, launch(0.05, ['shed', "X-Priority: -1\n"], ['late', "X-Priority: 3\n"]);
    my $t0 = time;
    my $res = collect(10, @socks);
    is($res->{blocker}{status}, 200, 'the first request is served');
    my $shed = $res->{shed};
    is($shed->{status}, 429, 'a sheddable request at saturation: 429');
    like($shed->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
    like($shed->{body}, qr/"type":"rate_limit_error".*"code":"rate_limit_exceeded"/,
         'and an OpenAI-style error');
    my $late = $res->{late};
    is($late->{status}, 503, 'waiting past the maximum: 503');
    like($late->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
    like($late->{body}, qr/"code":"queue_timeout"/, 'saying why');
    is(join(' ', served_order()), 'blocker', 'neither reached the backend');
    my %adm = map { $_->[0] => $_->[1] } read_log('flow.log');
    is("$adm{shed} $adm{late}", 'shed timeout', '$llmd_admission: shed, timeout');
    section_clean('shedding');
}

# --- 5. a client that leaves while queued; 6. displacement
{
    unlink servroot() . '/logs/backend.log';
    my $http = backend(0.8) . upstream("        llmd_queue size=1 timeout=10s displace;\n"
                                      . "        llmd_saturation inflight=1;\n");
    is(nginx_start(main_config => $main, http_config => $http, config => $locations),
       '', 'nginx started');
    my @socks = launch(0.1, ['blocker', '']);
    my ($gone) = launch(0.2, ['gone', '']);
    is(flow_of()->{queued}, 1, 'one request queued');
    close $gone->[1];
    sleep 0.2;
    my $f = flow_of();
    is($f->{queued}, 0, 'the client left: its request left the queue at once');
    is(prio($f, 0)->{cancelled}, 1, 'counted as cancelled');

    # size=1: each priority holds one waiting request; with displace, a
    # request whose priority is full takes the place of a lower one
    push @socks, launch(0.05, ['low', "X-Priority: 0\n"], ['high', "X-Priority: 2\n"],
                              ['high2', "X-Priority: 2\n"], ['high3', "X-Priority: 2\n"]);
    my $res = collect(10, @socks);
    is($res->{low}{status}, 429, 'displaced by a higher priority: 429');
    like($res->{low}{body}, qr/higher priority/, 'saying why');
    is("$res->{high}{status} $res->{high2}{status}", '200 200', 'the higher priority is served');
    is($res->{high3}{status}, 429, 'its priority full, nothing lower to displace: 429');
    is(join(' ', served_order()), 'blocker high high2',
       'the backend saw neither the gone nor the displaced');
    section_clean('cancel and displace');
}

# --- 7. one queue for all worker processes, and a reload while queued
{
    unlink servroot() . '/logs/backend.log';
    unlink servroot() . '/logs/flow.log';
    my $http = backend(0.25) . upstream("        llmd_queue size=50 timeout=20s;\n"
                                       . "        llmd_saturation inflight=1;\n");
    # reuseport: the kernel spreads the connections over the processes
    my %o = (main_config => $main, http_config => $http, config => $locations,
             workers => 4, listen_opts => 'reuseport');
    is(nginx_start(%o), '', 'nginx started with 4 worker processes');
    my @socks = launch(0.005, map { ["r$_", ''] } 1 .. 8);
    sleep 0.3;
    nginx_reload(%o);
    my $res = collect(20, @socks);
    is(scalar(grep { $res->{$_}{status} == 200 } keys %$res), 8,
       'every request served across a reload while they were queued');
    sleep 0.1;
    my @ended = sort { $a <=> $b } map { $_->[0] } read_log('backend.log');
    my $overlap = grep { $ended[$_] - $ended[$_ - 1] < 0.2 } 1 .. $#ended;
    is($overlap, 0, 'one at a time at the backend, as inflight=1 says') or diag "@ended";
    my %pids = map { $_->[5] => 1 } grep { $_->[1] eq 'queued' } read_log('flow.log');
    cmp_ok(scalar(keys %pids), '>', 1, 'queued requests in more than one worker process');
    my $f = flow_of();
    is("$f->{queued} $f->{granted}", '0 0', 'no stranded counters');
    section_clean('processes and reload');
}

# --- 8. Redis down while saturated: the local limit, logged
{
    redis_start();
    unlink servroot() . '/logs/backend.log';
    my $http = backend(0.3) . upstream(
        "        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms stale=300ms allow=127.0.0.0/8;\n"
      . "        llmd_queue size=10 timeout=20s;\n"
      . "        llmd_saturation inflight=1;\n");
    is(nginx_start(main_config => $main, http_config => $http, config => $locations),
       '', 'nginx started');
    worker_heartbeat(id => 'b1', addr => $B1, mb => 4);
    sleep 0.3;
    redis_stop();
    sleep 0.6;
    my @socks = launch(0.05, map { ["s$_", ''] } 1 .. 3);
    my $res = collect(10, @socks);
    is(scalar(grep { $res->{$_}{status} == 200 } keys %$res), 3, 'served with Redis gone');
    is(join(' ', served_order()), 's1 s2 s3', 'one at a time, in order, on the local limit');
    like(Test::LLMD::error_log_text(), qr/fleet state is stale, admission falls back to in-flight limits/,
         'the fallback is logged');
    section_clean('redis down');
}

# --- 9. X-LLMD-Priority is the gateway's word: every copy a client sent
# says the priority the gateway gave, and without llmd_priority a client's
# own is not passed on
{
    my $http = <<"END";
    server {
        listen $B1;
        location / { echo \$echo_client_request_headers; }
    }
    upstream llm {
        llmd;
        server $B1;
    }
END
    my $loc = <<'END';
    location /v1/ {
        llmd_priority $http_x_priority;
        proxy_pass http://llm;
    }
    location /plain/ {
        proxy_pass http://llm/v1/;
    }
END
    is(nginx_start(main_config => $main, http_config => $http, config => $loc),
       '', 'nginx started');
    my $res = nginx_request(completion('p1'),
        "X-Priority: 3\nX-LLMD-Priority: 99\nX-LLMD-Priority: 98\n");
    my @seen = $res->{body} =~ /^X-LLMD-Priority:\s*(\S+)\r?$/mig;
    is("@seen", '3 3', 'both client copies replaced by the gateway priority');
    $res = nginx_request(completion('p2'), "X-Priority: -2\n");
    @seen = $res->{body} =~ /^X-LLMD-Priority:\s*(\S+)\r?$/mig;
    is("@seen", '-2', 'added when the client sent none, sign kept');
    (my $plain = completion('p3')) =~ s{^POST /v1/}{POST /plain/};
    $res = nginx_request($plain, "X-LLMD-Priority: 99\n");
    @seen = $res->{body} =~ /^X-LLMD-Priority:\s*(\S+)\r?$/mig;
    is("@seen", '0', 'no llmd_priority: the client\'s own priority is not passed on');
    $res = nginx_request($plain);
    unlike($res->{body}, qr/X-LLMD-Priority/i, 'and none is added');
    section_clean('priority header');
}

# --- 10. room kept for urgent requests (reserve=): the last slot is not
# given to priority 0, so an interactive request finds it free
{
    my $http = backend(1.0) . upstream("        llmd_queue size=10 timeout=20s reserve=1;\n"
                                      . "        llmd_saturation inflight=2;\n");
    is(nginx_start(main_config => $main, http_config => $http, config => $locations),
       '', 'nginx started');

    my @socks = launch(0.1, ['batch1', "X-Priority: 0\n"], ['batch2', "X-Priority: 0\n"],
                       ['urgent', "X-Priority: 1\n"]);
    my $res = collect(15, @socks);
    is(scalar(grep { $res->{$_}{status} == 200 } keys %$res), 3, 'every request served');
    my @order = served_order();     # and the logs are written
    my %adm = map { $_->[0] => $_->[1] } read_log('flow.log');
    is("$adm{batch1} $adm{batch2} $adm{urgent}", 'admitted queued admitted',
       'priority 0 takes the first slot and waits for the kept one; priority 1 takes it')
        or diag join ' ', map { "$_=$adm{$_}" } sort keys %adm;
    is("@order", 'batch1 urgent batch2', 'the urgent request did not wait for batch1')
        or diag "@order";
    my ($b2) = grep { $_->[0] eq 'batch2' } read_log('flow.log');
    cmp_ok($b2->[2], '>=', 800, "batch2 waited until two slots were free ($b2->[2] ms)");
    is(flow_of()->{granted}, 0, 'status: no room left reserved');
    section_clean('reserve');
}

nginx_stop();
done_testing();
