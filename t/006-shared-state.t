# The zone is shared by worker processes and survives nginx -s reload.

use lib 't/lib';
use Test::LLMD;
use Test::More;

my $sys = "Shared system prompt for the state tests, long enough for blocks. " x 20;
my $req = sub { "POST /v1/chat/completions\n"
    . qq({"messages":[{"role":"system","content":"$sys"},{"role":"user","content":"$_[0]"}]}) };

my $http = <<'END';
    log_format llmd '$pid $llmd_peer $llmd_prefix_hit';
    upstream llm {
        llmd;
        llmd_zone llm 1m;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        location / { return 200 "$server_port\n"; }
    }
END

my $config = <<'END';
    location /v1/ {
        llmd_debug_headers on;
        access_log $TEST_NGINX_SERVROOT/logs/picks.log llmd;
        proxy_pass http://llm;
    }
END

# --- reload keeps what the zone learnt
my $err = nginx_start(http_config => $http, config => $config);
is($err, '', 'nginx started');

my $first = nginx_request($req->('before reload'));
is($first->{status}, 200, 'first request served');
my $peer = $first->{headers}{'x-llmd-upstream'};
like($peer, qr/^127\.0\.0\.1:\d+$/, "first pick $peer");

nginx_reload(http_config => $http, config => $config);

my @after = map { nginx_request($req->("after reload $_")) } 1 .. 3;
for my $r (@after) {
    is($r->{status}, 200, 'served after reload');
    is($r->{headers}{'x-llmd-upstream'}, $peer, 'same peer after reload');
    like($r->{headers}{'x-llmd-prefix-blocks'}, qr/^(\d+)\/\d+$/, 'blocks header');
    my ($m) = $r->{headers}{'x-llmd-prefix-blocks'} =~ /^(\d+)/;
    ok($m >= 4, "prefix remembered across the reload ($m blocks)");
}
unlike(error_log_text(), qr/\[(alert|emerg)\]/, 'no alerts around the reload');
nginx_stop();

# --- two worker processes, one view (reuseport spreads connections)
$err = nginx_start(http_config => $http, config => $config, workers => 2,
                   listen_opts => 'reuseport');
is($err, '', 'nginx with 2 workers started');

for my $i (1 .. 24) {
    my $r = nginx_request($req->("question $i"));
    die "request failed: $r->{status}" unless $r->{status} == 200;
}
nginx_stop();

open my $fh, '<', servroot() . '/logs/picks.log' or die "picks.log: $!";
my @lines = map { [split ' '] } <$fh>;
close $fh;

is(scalar @lines, 24, '24 picks logged');
my %pids = map { $_->[0] => 1 } @lines;
my %peers = map { $_->[1] => 1 } @lines;
cmp_ok(scalar keys %pids, '>=', 2, 'both worker processes served requests');
is(scalar keys %peers, 1, 'every worker sent the shared prefix to the same peer');
my @cold = grep { $_->[2] =~ /^0\// } @lines[1 .. $#lines];
is(scalar @cold, 0, 'only the very first request found no prefix');

if ($ENV{TEST_NGINX_CHECK_SANITIZER}) {
    my $r = sanitizer_report();
    ok(!defined $r, 'no sanitizer report' . ($r ? ": $r" : ''));
}

done_testing();
