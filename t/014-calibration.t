# Calibration of predicted TTFT against what the gateway observes: the
# fleet's common bias is learned from every answer, and a peer's own
# difference from it counts only beyond its prediction error.  Identical
# workers whose answers are noisy keep sharing the traffic; one that is
# consistently slower is still corrected; a new one starts from the
# fleet's figure.  A real redis-server; heartbeats written the way workers
# write them; the backends report their TTFT in X-LLMD-TTFT-Ms as
# llmd-worker does for a non-streamed answer.

use lib 't/lib';
use Test::LLMD;
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);

sub peer_of { $_[0]->{headers}{'x-llmd-upstream'} // '-' }

sub status {
    return decode_json(nginx_request("GET /llmd/status")->{body})->{upstreams}[0];
}

sub peer_status {
    my ($st, $addr) = @_;
    my ($p) = grep { $_->{name} eq $addr } @{ $st->{peers} };
    return $p->{worker};
}

my $n = 0;
sub chat {
    $n++;
    return "POST /v1/chat/completions\n{\"max_tokens\":16,\"messages\":"
         . "[{\"role\":\"user\",\"content\":\"question number $n\"}]}";
}

my ($A, $B, $C) = map { '127.0.0.1:' . rand_port($_) } 1 .. 3;
my ($pa, $pb, $pc) = map { rand_port($_) } 1 .. 3;

# $request_id is random: half the answers take 20 ms, half 420 ms
sub backends {
    my ($ttft_a, $ttft_b) = @_;
    return <<"END";
    map \$request_id \$noisy_ttft {
        ~^[0-7]  20;
        default  420;
    }
    server {
        listen $A;
        location / {
            add_header X-LLMD-TTFT-Ms $ttft_a;
            return 200 "\$server_port\\n";
        }
    }
    server {
        listen $B;
        listen $C;
        location / {
            add_header X-LLMD-TTFT-Ms $ttft_b;
            return 200 "\$server_port\\n";
        }
    }
END
}

my $upstream = <<'END';
    upstream llm {
        llmd;
        llmd_predict on;
        llmd_redis unix:$TEST_NGINX_REDIS_SOCK interval=50ms allow=127.0.0.1/32;
    }
END

my $config = gateway_locations();

# a 20,000-token prefill queue at 100,000 tokens/s: 200 ms by the workers'
# own figures, the same for both
my %same = (ptps => 100000, qpt => 20000);

redis_start();

# --- 1. two identical workers, noisy answers: the noise is no reason to
# prefer one, so ties rotate between them
is(nginx_start(http_config => $upstream . backends('$noisy_ttft', '$noisy_ttft'),
               config => $config), '', 'nginx started');
worker_heartbeat(id => 'a', addr => $A, %same);
worker_heartbeat(id => 'b', addr => $B, %same);
sleep 0.4;

my @picks = map { peer_of(nginx_request(chat())) } 1 .. 80;
my %count;
$count{$_}++ for @picks;
my $switches = grep { $picks[$_] ne $picks[$_ - 1] } 1 .. $#picks;
ok($count{$A} >= 32 && $count{$B} >= 32,
   "noisy but identical workers share the traffic ($count{$A}/$count{$B})");
ok($switches >= 0.8 * $#picks,
   "consecutive picks alternate, no runs on the one that looked faster ($switches of $#picks)");

my $st = status();
ok($st->{ttft_samples} >= 80, 'status: the fleet residual learned from every answer');
my ($wa, $wb) = (peer_status($st, $A), peer_status($st, $B));
ok($wa->{ttft_samples} > 0 && $wb->{ttft_samples} > 0, 'status: both peers observed');
is($wa->{ttft_correction_ms}, $st->{ttft_residual_ms}, 'a is corrected by the fleet residual alone');
is($wb->{ttft_correction_ms}, $st->{ttft_residual_ms}, '... and so is b');
ok($wa->{prediction_error_ms} > 50, "a's prediction error shows the noise ($wa->{prediction_error_ms} ms)");

# --- 2. a worker that joins starts from the fleet's residual, not zero
worker_heartbeat(id => 'c', addr => $C, %same);
sleep 0.4;
$st = status();
my $wc = peer_status($st, $C);
is($wc->{ttft_samples}, 0, 'c has no observation of its own');
is($wc->{ttft_correction_ms}, $st->{ttft_residual_ms}, 'c starts from the fleet residual');
nginx_stop();

# --- 3. a worker consistently 400 ms slower than its figures say is
# corrected, since that is far beyond its scatter; the correction fades
# without new samples, so it is tried again now and then, and a worker
# that recovered would not stay idle
redis_cmd('DEL', 'llmd:default:hb');
is(nginx_start(http_config => $upstream . backends('420', '20'), config => $config),
   '', 'nginx restarted: a slow, b fast');
worker_heartbeat(id => 'a', addr => $A, %same);
worker_heartbeat(id => 'b', addr => $B, %same);
sleep 0.4;

@picks = map { peer_of(nginx_request(chat())) } 1 .. 80;
my $late_a = grep { $_ eq $A } @picks[30 .. 79];
ok($late_a <= 5, "once learned, the slow worker gets few requests ($late_a of the last 50)");
ok($late_a >= 1, '... but is still tried: its correction fades without samples');
$st = status();
($wa, $wb) = (peer_status($st, $A), peer_status($st, $B));
ok($wa->{ttft_correction_ms} > $wb->{ttft_correction_ms},
   "a's correction exceeds b's ($wa->{ttft_correction_ms} against $wb->{ttft_correction_ms} ms)");
is(nginx_request(chat())->{headers}{'x-llmd-pick'}, 'predicted', 'pick reason predicted');

nginx_stop();
redis_stop();

done_testing();
