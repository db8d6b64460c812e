# The prefill a gateway sent a worker and has not seen answered
# (prefilling_tokens): counted from the pick until the response header,
# which a streaming worker sends with the first token, and given back by a
# failed try.  The next request's wait is that prefill, which the work in
# flight alone does not tell (bench/results/uniform).  A real redis-server;
# the worker is a forked HTTP server that holds its header, or its body.

use lib 't/lib';
use Test::LLMD;
use Test::More;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);

# a worker that, by the prompt's first word, holds its response header
# (hold-header), sends the header and holds the body (hold-body), or hangs
# up without an answer (hang-up)
sub slow_worker {
    my ($port, $delay) = @_;
    return scripted_backend($port, sub {
        my ($c, $head, $body) = @_;
        my ($mode) = $body =~ /"prompt":"(\S+)/;
        return if $mode eq 'hang-up';
        sleep $delay if $mode eq 'hold-header';
        print $c "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        $c->flush;
        sleep $delay if $mode eq 'hold-body';
        my $out = "data: {\"done\":true}\n\n";
        printf $c "%x\r\n%s\r\n0\r\n\r\n", length $out, $out;
    });
}

sub peer {
    my ($name) = @_;
    my $st = decode_json(nginx_request("GET /llmd/status")->{body});
    my ($p) = grep { $_->{name} eq $name } @{ $st->{upstreams}[0]{peers} };
    return $p;
}

my $words = join ' ', map { "w$_" } 1 .. 400;

# a request sent from a child, so the test can look while it is in flight
sub in_background {
    my ($mode) = @_;
    my $kid = fork();
    if ($kid == 0) {
        my $r = nginx_request("POST /v1/completions\n"
                              . "{\"max_tokens\":8,\"stream\":true,"
                              . "\"prompt\":\"$mode $words\"}");
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    return $kid;
}

my ($ps, $pf) = (rand_port(1), rand_port(2));
my ($SLOW, $FAST) = ("127.0.0.1:$ps", "127.0.0.1:$pf");
my $worker = slow_worker($ps, 1.5);

my $http = <<"END";
    upstream llm {
        llmd;
        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms allow=127.0.0.1/32;
    }
    server {
        listen $FAST;
        location / { return 200 "data: {\\"done\\":true}\\n\\n"; }
    }
END

redis_start();
# retries of a POST, as examples/llmd.conf has them
my $config = <<'END';
    location /v1/ {
        proxy_next_upstream error timeout non_idempotent;
        proxy_pass http://llm;
    }
    location = /llmd/status { llmd_status; }
END

is(nginx_start(http_config => $http, config => $config), '', 'nginx started');
worker_heartbeat(id => 'slow', addr => $SLOW);
sleep 0.4;

# 1. until the header: prefilling is the request's uncached prompt
my $kid = in_background('hold-header');
sleep 0.5;
my $p = peer($SLOW);
is($p->{inflight}, 1, 'one request in flight on the worker');
# no heartbeat says otherwise: 4 prompt bytes a token, nothing cached
is($p->{prefilling_tokens}, int(length("hold-header $words") / 4),
   'prefilling while no header came: the whole uncached prompt');
cmp_ok($p->{prefilling_tokens}, '<=', $p->{inflight_work}, '... part of the work in flight');
waitpid($kid, 0);
is($?, 0, 'answered');
$p = peer($SLOW);
is("$p->{inflight} $p->{prefilling_tokens} $p->{inflight_work}", '0 0 0', 'all given back');

# 2. the header came with the first token: decoding, no longer prefilling
$kid = in_background('hold-body');
sleep 0.5;
$p = peer($SLOW);
is($p->{inflight}, 1, 'streaming: still in flight');
cmp_ok($p->{inflight_work}, '>', 0, '... with its work');
is($p->{prefilling_tokens}, 0, '... but not prefilling once the header is out');
waitpid($kid, 0);
is($?, 0, 'answered');

# 3. a try that fails gives its prefill back; the retry counts its own
worker_heartbeat(id => 'fast', addr => $FAST);
sleep 0.4;
my $served = 0;
for (1 .. 4) {
    $kid = in_background('hang-up');
    waitpid($kid, 0);
    $served++ if $? == 0;
}
is($served, 4, 'a worker that hangs up: the request is retried and served');
my ($s, $f) = (peer($SLOW), peer($FAST));
cmp_ok($s->{failures}, '>=', 1, "the worker that hangs up was tried ($s->{failures} times)");
is("$s->{prefilling_tokens} $f->{prefilling_tokens}", '0 0', 'no prefill left counted on either');
is("$s->{inflight} $f->{inflight}", '0 0', 'nor requests');

nginx_stop();
kill 'TERM', $worker;
waitpid($worker, 0);
redis_stop();

done_testing();
