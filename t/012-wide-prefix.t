# A prefix shared by more workers than an index entry lists, and the
# imbalance switch passing over only the overloaded workers.  A real
# redis-server; heartbeats, cache events and another gateway's load record
# are written the way workers and gateways write them (common/llmd_wire).

use lib 't/lib';
use Test::LLMD;
use Test::More;
use Data::MessagePack;
use Time::HiRes qw(sleep time);

my $mp = Data::MessagePack->new->prefer_integer;
my $HB = 'llmd:default:hb';
my $EV = 'llmd:default:events';
my $GW = 'llmd:default:gw';

sub stored {
    my ($addr, @keys) = @_;
    my %e = (v => 1, id => "w-$addr", addr => $addr, type => 1,
             ts => int(time * 1000), bs => 256, keys => [map { 0 + $_ } @keys]);
    redis_cmd('XADD', $EV, '*', 'e', $mp->pack(\%e));
}

sub peer_of { $_[0]->{headers}{'x-llmd-upstream'} // '-' }
sub body_of { (split /\n/, $_[0], 2)[1] }

# a system prompt every worker holds, and one conversation on top of it
my $sys = "A system prompt that every worker of the fleet holds. " x 24;
sub chat {
    my @turns = @_;
    my @msgs = (qq({"role":"system","content":"$sys"}));
    for my $i (0 .. $#turns) {
        my $role = $i % 2 ? 'assistant' : 'user';
        push @msgs, qq({"role":"$role","content":"$turns[$i]"});
    }
    return "POST /v1/chat/completions\n"
        . '{"model":"m","max_tokens":8,"messages":[' . join(',', @msgs) . ']}';
}

my $N = 10;     # more than an index entry lists
my ($http, @addr) = discovered_fleet($N);

my $config = gateway_locations();

redis_start();
is(nginx_start(http_config => $http, config => $config), '', 'nginx started');
worker_heartbeat(id => "w$_", addr => $addr[$_]) for 0 .. $N - 1;
sleep 0.4;

# --- 1. the worker holding a conversation is found under a system prompt
# that more workers hold than an entry lists
my $history = 'My question about the fleet, asked at some length. ' x 24;
my $answer = 'An answer of about the same length as the question. ' x 12;
my $held = chat($history);
my @sys_keys = prefix_keys(body_of(chat()));
my @conv_keys = prefix_keys(body_of($held));
ok(@conv_keys > @sys_keys + 2, scalar(@conv_keys) . ' keys in the conversation, '
   . scalar(@sys_keys) . ' in the system prompt alone');

stored($addr[0], @conv_keys);                          # w0 holds the conversation
stored($addr[$_], @sys_keys) for 1 .. $N - 1;          # then 9 others the prompt
sleep 0.3;

my $next = chat($history, $answer, 'And a follow-up question.');
my $r = nginx_request($next);
is(peer_of($r), $addr[0], 'the next turn goes to the worker holding the history');
my ($m, $t) = split m{/}, $r->{headers}{'x-llmd-prefix-blocks'} // '0/0';
ok($m >= @conv_keys - 1, "its history matched ($m of $t blocks)");
is($r->{headers}{'x-llmd-pick'}, 'affinity', 'pick reason affinity');

# any of the 8 workers the system prompt's entries list has it all
$r = nginx_request(chat('A new conversation.'));
($m) = split m{/}, $r->{headers}{'x-llmd-prefix-blocks'} // '0/0';
ok($m >= @sys_keys - 1, "a new conversation matches the system prompt ($m blocks)");
isnt(peer_of($r), $addr[0], '... on one of the workers that list it');

# --- 2. under imbalance only the overloaded worker is passed over: the
# holder of a conversation, not overloaded, keeps it
my %gw = (v => 1, id => 'other-gateway', seq => 1, ts => int(time * 1000),
          peers => [{ addr => $addr[9], n => 40, tok => 40000 }]);
redis_cmd('HSET', $GW, 'other-gateway', $mp->pack(\%gw));
sleep 0.3;

my $conv2 = chat('Another conversation, held by worker 5. ' x 12);
my @keys2 = prefix_keys(body_of($conv2));
stored($addr[5], @keys2);
sleep 0.3;
my @peers = map { peer_of(nginx_request($conv2)) } 1 .. 4;
is("@peers", join(' ', ($addr[5]) x 4),
   'imbalanced fleet: the holder, not overloaded, keeps its conversation');

# the overloaded worker holds one: it is passed over, by the balance rule
my $conv3 = chat('A conversation held by the overloaded worker 9. ' x 48);
my @keys3 = prefix_keys(body_of($conv3));
stored($addr[9], @keys3);
sleep 0.3;
$r = nginx_request($conv3);
isnt(peer_of($r), $addr[9], 'the overloaded holder is passed over');
is($r->{headers}{'x-llmd-pick'}, 'balance', 'pick reason balance');

redis_cmd('DEL', $GW);
nginx_stop();

# --- 3. predictions: a few percent between workers is noise, and the less
# loaded of two about equally fast workers wins
(my $http_predict = $http) =~ s/llmd;\n/llmd;\n        llmd_predict on;\n/;
is(nginx_start(http_config => $http_predict, config => $config), '', 'nginx with llmd_predict');
redis_cmd('DEL', $HB);
worker_heartbeat(id => 'w0', addr => $addr[0], ptps => 1000);
worker_heartbeat(id => 'w1', addr => $addr[1], ptps => 1050);     # 5% faster
%gw = (v => 1, id => 'other-gateway', seq => 1, ts => int(time * 1000),
       peers => [{ addr => $addr[1], n => 3, tok => 3000, wk => 3000 }]);
redis_cmd('HSET', $GW, 'other-gateway', $mp->pack(\%gw));
sleep 0.4;
my $cold = "POST /v1/completions\n{\"max_tokens\":8,\"prompt\":\"" . ('a cold prompt ' x 280) . '"}';
$r = nginx_request($cold);
is(peer_of($r), $addr[0], 'about as fast and less loaded: w0 over the 5% faster w1');
is($r->{headers}{'x-llmd-pick'}, 'predicted', 'pick reason predicted');

worker_heartbeat(id => 'w0', addr => $addr[0], ptps => 500);       # twice as slow
sleep 0.3;
$r = nginx_request($cold =~ s/a cold prompt/another cold one/gr);
is(peer_of($r), $addr[1], 'twice as fast: w1, though busier');

# --- 4. a worker with every batch slot taken admits a request only when
# one of its sequences ends: 5 past 64 slots, answers of 256 tokens and
# 37.5 ms steps wait about 750 ms, where a 4,000-token prefill queue at
# 16,000 tokens/s is 250 ms
redis_cmd('DEL', $GW);
my %full = (ptps => 16000, mb => 64, req => 100, gtok => 25600);
worker_heartbeat(id => 'w0', addr => $addr[0], run => 64, wait => 4, %full);
worker_heartbeat(id => 'w1', addr => $addr[1], run => 60, qpt => 4000, %full);
sleep 0.3;
$r = nginx_request($cold =~ s/a cold prompt/a third cold one/gr);
is(peer_of($r), $addr[1], 'full batch: w1 with a prefill queue over w0 waiting for a slot');

my $st = nginx_request("GET /llmd/status");
like($st->{body}, qr/"max_batch":64,"mean_output":256.0/, 'status reports max_batch and mean_output');

# a worker that does not report its batch size has no slot wait
delete $full{mb};
worker_heartbeat(id => 'w0', addr => $addr[0], run => 64, wait => 4, %full);
worker_heartbeat(id => 'w1', addr => $addr[1], run => 60, qpt => 4000, %full);
sleep 0.3;
$r = nginx_request($cold =~ s/a cold prompt/a fourth cold one/gr);
is(peer_of($r), $addr[0], 'no max_batch reported: no slot wait, w0');

redis_cmd('DEL', $GW);
nginx_stop();
redis_stop();

done_testing();
