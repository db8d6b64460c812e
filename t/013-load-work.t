# The load term counts the work in flight, not its size: prompt tokens the
# worker did not hold when picked, plus max_tokens.  A real redis-server;
# heartbeats and another gateway's load record are written the way workers
# and gateways write them (common/llmd_wire).

use lib 't/lib';
use Test::LLMD;
use Test::More;
use Data::MessagePack;
use Time::HiRes qw(sleep time);

my $mp = Data::MessagePack->new->prefer_integer;
my $GW = 'llmd:default:gw';
my %seq;

# another gateway's requests in flight, per worker: [n, tok, wk]
sub other_gateway {
    my (%load) = @_;
    my %gw = (v => 1, id => 'other-gateway', seq => ++$seq{gw}, ts => int(time * 1000),
              peers => [map { { addr => $_, n => $load{$_}[0],
                                tok => $load{$_}[1],
                                (defined $load{$_}[2] ? (wk => $load{$_}[2]) : ()) } }
                        sort keys %load]);
    redis_cmd('HSET', $GW, 'other-gateway', $mp->pack(\%gw));
}

sub peer_of { $_[0]->{headers}{'x-llmd-upstream'} // '-' }

my ($http, @addr) = discovered_fleet(2);

my $config = gateway_locations();

redis_start();
is(nginx_start(http_config => $http, config => $config), '', 'nginx started');
worker_heartbeat(id => "w$_", addr => $addr[$_]) for 0 .. 1;
sleep 0.4;

my $n = 0;
sub short_request {
    $n++;
    return "POST /v1/completions\n{\"max_tokens\":16,\"prompt\":\"A short lookup, number $n.\"}";
}

# w0 runs a long conversation's next turn, 8,000 tokens of which it holds
# all but 300; w1 prefills a cold 3,000-token prompt.  One request each.
other_gateway($addr[0] => [1, 8128, 428], $addr[1] => [1, 3128, 3128]);
sleep 0.3;

my @peers = map { peer_of(nginx_request(short_request())) } 1 .. 3;
is("@peers", join(' ', ($addr[0]) x 3),
   'short requests go to the worker with less work, not fewer tokens');

my $st = nginx_request("GET /llmd/status");
like($st->{body}, qr/"inflight_work":0/, 'status reports inflight_work');

# the same sizes with the work reversed send them the other way
other_gateway($addr[0] => [1, 8128, 8128], $addr[1] => [1, 3128, 428]);
sleep 0.3;
@peers = map { peer_of(nginx_request(short_request())) } 1 .. 3;
is("@peers", join(' ', ($addr[1]) x 3), '... and follow the work when it moves');

# a gateway that publishes no work (an older version) counts as none
other_gateway($addr[0] => [1, 8128], $addr[1] => [1, 3128, 3128]);
sleep 0.3;
@peers = map { peer_of(nginx_request(short_request())) } 1 .. 3;
is("@peers", join(' ', ($addr[0]) x 3), 'a record without work counts as none');

redis_cmd('DEL', $GW);
nginx_stop();

# The Dynamo reference counts a worker's active blocks once, however many
# requests share them: four requests in flight on the worker that holds a
# 3,000-token prompt, all hits, weigh their own work, not 4 x 3,000 tokens.
(my $dyn = $http) =~ s/llmd;\n/llmd;\n        llmd_policy dynamo;\n/;
is(nginx_start(http_config => $dyn, config => $config), '', 'nginx with llmd_policy dynamo');
worker_heartbeat(id => "w$_", addr => $addr[$_], ev => 0) for 0 .. 1;
sleep 0.4;

my $words = join ' ', map { "word$_" } 1 .. 1700;
my $long = "POST /v1/completions\n{\"max_tokens\":16,\"prompt\":\"$words\"}";
my $r = nginx_request($long);
is($r->{headers}{'x-llmd-pick'}, 'dynamo', 'picked by the Dynamo cost');
my $holder = peer_of($r);
my ($other) = grep { $_ ne $holder } @addr;
my $tok = 4 * (int(length($words) / 4) + 16);

other_gateway($holder => [4, $tok, 4 * 32], $other => [0, 0, 0]);
sleep 0.3;
is(peer_of(nginx_request($long)), $holder,
   'dynamo: requests sharing the holder\'s prefix weigh once');

other_gateway($holder => [4, $tok, $tok], $other => [0, 0, 0]);
sleep 0.3;
is(peer_of(nginx_request($long)), $other,
   '... and cold work in flight there still sends it elsewhere');

redis_cmd('DEL', $GW);
nginx_stop();
redis_stop();

done_testing();
