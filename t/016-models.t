# Model-aware pools: a request goes only to peers that serve its "model"
# (llmd_model lines for server lines, heartbeats for workers), an unknown
# model is answered 404 model_not_found at the gateway, GET /v1/models
# lists the fleet's models, and two models never share prefix affinity.
# Last, real llmd-worker sim processes of two models behind one upstream.

use lib 't/lib';
use Test::LLMD;
use Test::More;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

my @port = map { rand_port($_) } 1 .. 4;
my @addr = map { "127.0.0.1:$_" } @port;

my $sys = "A system prompt long enough for several prefix blocks of its own. " x 20;
sub chat { my ($model, $q) = @_;
    my $m = defined $model ? qq("model":"$model",) : '';
    "POST /v1/chat/completions\n"
    . qq({$m"max_tokens":4,"messages":[{"role":"system","content":"$sys"},{"role":"user","content":"$q"}]}) }

# a prompt of its own: no prefix shared with any other request here
sub own { my ($model, $q) = @_;
    "POST /v1/completions\n"
    . qq({"model":"$model","max_tokens":4,"prompt":") . ("$q has a prompt of its own " x 40) . '"}' }

sub peer_of { $_[0]->{headers}{'x-llmd-upstream'} // '-' }

my $backends = "    log_format models '\$llmd_model \$llmd_peer';\n    server {\n"
    . join('', map { "        listen $_;\n" } @addr)
    . "        location / { return 200 \"\$server_port\\n\"; }\n    }\n";

my $locations = <<'END';
    location /v1/ {
        access_log $TEST_NGINX_SERVROOT/logs/models.log models;
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
    location = /v1/models { llmd_models; }
    location = /llmd/status { llmd_status; }
END

# the end of a section: nothing alarming logged, no sanitizer report
sub section_clean { my ($what) = @_;
    unlike(error_log_text(), qr/\[(alert|emerg)\]/, "$what: no alerts");
    if ($ENV{TEST_NGINX_CHECK_SANITIZER}) {
        my $r = sanitizer_report();
        ok(!defined $r, "$what: no sanitizer report" . ($r ? ": $r" : ''));
    }
}

sub models_list {
    my $r = nginx_request("GET /v1/models");
    my $j = eval { decode_json($r->{body}) } || {};
    return ($r, $j, join(' ', sort map { $_->{id} } @{ $j->{data} || [] }));
}

# --- 1. server lines with llmd_model
{
    my $http = <<"END" . $backends;
    upstream llm {
        llmd;
        server $addr[0];
        server $addr[1];
        server $addr[2];
        server $addr[3];
        llmd_model alpha $addr[0] $addr[1];
        llmd_model beta $addr[2] $addr[3];
    }
END
    is(nginx_start(http_config => $http, config => $locations), '', 'nginx started');

    my (%alpha, %beta);
    $alpha{ peer_of(nginx_request(own('alpha', "a$_"))) }++ for 1 .. 8;
    $beta{ peer_of(nginx_request(own('beta', "b$_"))) }++ for 1 .. 8;
    is(join(' ', sort keys %alpha), join(' ', sort @addr[0, 1]), 'model alpha: only its two peers')
        or diag explain \%alpha;
    is(join(' ', sort keys %beta), join(' ', sort @addr[2, 3]), 'model beta: only its two peers')
        or diag explain \%beta;

    my $r = nginx_request(chat('gamma', 'hello'));
    is($r->{status}, 404, 'an unknown model: 404');
    like($r->{body}, qr/"param":"model","code":"model_not_found"/, 'model_not_found, OpenAI style');
    is(peer_of($r), '-', 'and nothing was forwarded');

    # the same prompt bytes for two models share no affinity
    my $p = own('alpha', 'shared');
    nginx_request($p) for 1 .. 2;
    (my $pb = $p) =~ s/"model":"alpha"/"model":"beta"/;
    my $rb = nginx_request($pb);
    like(peer_of($rb), qr/^\Q$addr[2]\E|\Q$addr[3]\E$/, 'beta goes to a beta peer');
    like($rb->{headers}{'x-llmd-prefix-blocks'}, qr{^0/}, 'matching none of alpha\'s blocks');
    my $ra = nginx_request($p);
    is($ra->{headers}{'x-llmd-pick'}, 'affinity', 'alpha keeps its own affinity');

    my (undef, $j, $ids) = models_list();
    is($ids, 'alpha beta', '/v1/models: the union of the models');
    is($j->{object}, 'list', 'in OpenAI\'s shape');
    is($j->{data}[0]{object}, 'model', 'each a model object');

    is(peer_of(nginx_request(chat(undef, 'no model'))) =~ /^127/ ? 1 : 0, 1,
       'a request naming no model goes to any peer');
    open my $fh, '<', servroot() . '/logs/models.log';
    my @log = <$fh>;
    like($log[0], qr/^alpha 127\.0\.0\.1:\d+$/, '$llmd_model in the log');
    section_clean('server lines');
}

# --- 2. workers found through heartbeats, each naming its model
redis_start();
{
    my $http = <<"END" . $backends;
    upstream llm {
        llmd;
        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms stale=500ms allow=127.0.0.0/8;
    }
END
    is(nginx_start(http_config => $http, config => $locations), '', 'nginx started');
    worker_heartbeat(id => "w$_", addr => $addr[$_], model => ($_ < 3 ? 'alpha' : 'beta'))
        for 0 .. 3;
    sleep 0.3;

    my %seen;
    for my $m ('alpha', 'beta') {
        $seen{"$m " . peer_of(nginx_request(own($m, "q$_")))}++ for 1 .. 6;
    }
    my @mis = grep { /^alpha \Q$addr[3]\E$/ || /^beta (?!\Q$addr[3]\E$)/ } keys %seen;
    is(scalar(@mis), 0, 'heartbeat models: zero misroutes') or diag explain \%seen;
    is(scalar(grep { /^alpha/ } keys %seen), 3, 'alpha spread over its three workers');

    my $r = nginx_request(chat('gamma', 'x'));
    is($r->{status}, 404, 'unknown to fresh fleet state: 404');
    my (undef, undef, $ids) = models_list();
    is($ids, 'alpha beta', '/v1/models from the heartbeats');

    my $st = decode_json(nginx_request("GET /llmd/status")->{body});
    my ($w3) = grep { $_->{name} eq $addr[3] } @{ $st->{upstreams}[0]{peers} };
    is($w3->{model}, 'beta', 'status shows each peer\'s model');

    # beta's only worker goes silent: beta is no longer served
    worker_heartbeat(id => 'w3', addr => $addr[3], model => 'beta', ttl => 100);
    sleep 0.4;
    is(nginx_request(chat('beta', 'y'))->{status}, 404, 'a model whose workers are gone: 404');
    (undef, undef, $ids) = models_list();
    is($ids, 'alpha', '/v1/models lists live models only');

    # fleet state gone stale: the gateway does not claim to know
    redis_stop();
    sleep 0.8;
    isnt(nginx_request(chat('gamma', 'z'))->{status}, 404,
         'with stale fleet state an unknown model is not refused');
    redis_start();
    section_clean('heartbeats');
}

# --- 3. real workers of two models behind one upstream
my $worker = $ENV{LLMD_WORKER} || 'workers/build/llmd-worker';
SKIP: {
    skip "$worker not built (make workers)", 5 unless -x $worker;

    my @wport = map { rand_port(10 + $_) } 1 .. 3;
    my @model = qw(alpha alpha beta);
    my $logs = servroot();
    my @pids;
    for my $i (0 .. 2) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            open STDOUT, '>>', "$logs.worker$i.log";
            open STDERR, '>&', \*STDOUT;
            exec $worker, '--listen', "127.0.0.1:$wport[$i]", '--backend', 'sim',
                 '--model-name', $model[$i], '--speed', '50', '--worker-id', "rw$i",
                 '--redis', "unix://$ENV{TEST_NGINX_REDIS_SOCK}", '--heartbeat-ms', '50';
            exit 127;
        }
        push @pids, $pid;
    }
    my $http = <<"END";
    log_format models '\$llmd_model \$llmd_peer';
    upstream llm {
        llmd;
        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms allow=127.0.0.0/8;
    }
END
    is(nginx_start(http_config => $http, config => $locations), '', 'nginx started');
    my $deadline = time + 10;
    my $ids = '';
    while (time < $deadline) {
        (undef, undef, $ids) = models_list();
        last if $ids eq 'alpha beta';
        sleep 0.1;
    }
    is($ids, 'alpha beta', 'the workers\' models, from their heartbeats');

    my @specs = map { chat($_ % 3 ? 'alpha' : 'beta', "real $_") } 1 .. 24;
    my @res = Test::LLMD::send_requests(\@specs, undef, 6, 20);
    my $ok = grep { $_->{status} == 200 } @res;
    is($ok, 24, 'every request answered by a worker of its model (a worker 404s any other)');
    my @wrong = grep { my $j = eval { decode_json($res[$_]{body}) } || {};
                       ($j->{model} // '') ne (($_ + 1) % 3 ? 'alpha' : 'beta') } 0 .. $#res;
    is(scalar(@wrong), 0, 'zero misroutes: each answer names the model asked for');

    kill 'TERM', @pids;
    waitpid($_, 0) for @pids;
    section_clean('real workers');
}

redis_stop();
nginx_stop();
done_testing();
