package Test::LLMD;

# A small Test::Nginx::Socket work-alike on Test::Base, for the t/*.t suites.
#
# Blocks use the Test::Nginx data format; the sections implemented are
#   main_config http_config config request more_headers error_code
#   response_body response_body_like response_headers response_headers_like
#   error_log no_error_log ignore_response wait must_die
# plus llmd extensions that Test::Nginx would ignore:
#   workers: N          worker_processes for this block
#   parallel: N         send the block's requests N at a time
#   upstreams_like: RE  RE against the X-LLMD-Upstream values of all
#                       responses, joined by spaces
#   first_body_byte_within: S   the first body byte arrived within S seconds
#
# A request with a body gets Content-Type: application/json, as OpenAI
# clients send it, unless more_headers names one; "Content-Type:" with no
# value there sends none (curl's -H 'Name:' convention).
#
# For steps a block cannot express (reloads, several phases), test files use
# the functions nginx_start, nginx_request, nginx_reload, nginx_stop and
# error_log_text directly.
#
# Environment: TEST_NGINX_BINARY (default nginx), TEST_NGINX_LOAD_MODULE
# (the .so to load), TEST_NGINX_CHECK_SANITIZER (fail on ASan/UBSan
# reports), TEST_NGINX_SERVROOT.  In configs, $TEST_NGINX_SERVER_PORT,
# $TEST_NGINX_RAND_PORT_1..9, $TEST_NGINX_SERVROOT and any other
# $TEST_NGINX_* variable of the environment are expanded.

use Test::Base -Base;

use Cwd qw(abs_path);
use File::Path qw(make_path remove_tree);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);

our @EXPORT = qw(run_tests repeat_each workers no_shuffle server_port
                 rand_port nginx_start nginx_request nginx_reload nginx_stop
                 error_log_text servroot sanitizer_report redis_start
                 redis_stop redis_cmd prefix_keys worker_heartbeat
                 gateway_locations discovered_fleet scripted_backend);

$SIG{PIPE} = 'IGNORE';

my $OwnerPid = $$;      # forked helpers must not tear down the servers
my $RepeatEach = 1;
my $Workers = 1;
my $Binary = $ENV{TEST_NGINX_BINARY} || 'nginx';
my $Module = $ENV{TEST_NGINX_LOAD_MODULE};
my $CheckSanitizer = $ENV{TEST_NGINX_CHECK_SANITIZER};
my $ServRoot;
my $NginxPid;
my $ServerPort;
my @RandPorts;
my $LogOffset = 0;

my $RedisPid;
my $RedisDir;

# A real redis-server on a unix socket, as our child; its socket path is
# $TEST_NGINX_REDIS_SOCK in configs.
sub redis_start () {
    $RedisDir ||= "/tmp/llmd-r-$$";
    make_path($RedisDir);
    my $sock = "$RedisDir/redis.sock";
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>>', "$RedisDir/redis.log";
        open STDERR, '>>', "$RedisDir/redis.log";
        exec 'redis-server', '--port', '0', '--unixsocket', $sock,
             '--unixsocketperm', '777', '--save', '', '--appendonly', 'no',
             '--dir', $RedisDir;
        exit 127;
    }
    $RedisPid = $pid;
    my $deadline = time + 5;
    while (time < $deadline) {
        last if -S $sock && eval { redis_cmd('PING') eq 'PONG' };
        sleep 0.01;
    }
    $ENV{TEST_NGINX_REDIS_SOCK} = $sock;
    return $sock;
}

sub redis_stop () {
    return unless $RedisPid;
    kill 'TERM', $RedisPid;
    waitpid($RedisPid, 0);
    undef $RedisPid;
    unlink "$RedisDir/redis.sock";
}

sub redis_read () {
    my $s = shift;
    my $line = <$s>;
    die "redis: connection closed\n" unless defined $line;
    $line =~ s/\r\n\z//;
    my ($t, $rest) = (substr($line, 0, 1), substr($line, 1));
    return $rest if $t eq '+' || $t eq ':';
    die "redis: $rest\n" if $t eq '-';
    if ($t eq '$') {
        return undef if $rest < 0;
        my $buf = '';
        while (length $buf < $rest + 2) {
            read($s, $buf, $rest + 2 - length $buf, length $buf) or last;
        }
        return substr($buf, 0, $rest);
    }
    if ($t eq '*') {
        return undef if $rest < 0;
        return [map { redis_read($s) } 1 .. $rest];
    }
    die "redis: bad reply $line\n";
}

# A worker's heartbeat into llmd:default:hb, as llmd-worker writes it
# (common/llmd_wire): an idle worker, with the fields a test passes over
# those defaults.
my %HeartbeatSeq;

sub worker_heartbeat () {
    my %o = @_;
    require Data::MessagePack;
    my %h = (v => 1, pool => 'default', model => 'm', role => 0,
             seq => ++$HeartbeatSeq{$o{id}}, ts => int(time * 1000),
             ivl => 50, ttl => 60000, run => 0, wait => 0, qpt => 0,
             kvu => 1, kvt => 100, bt => 16, ptps => 0, dms0 => 5.5,
             dms1 => 0.5, ttft => 10.5, req => 0, ptok => 0, gtok => 0,
             hit => 0, ev => 1, %o);
    redis_cmd('HSET', 'llmd:default:hb', $o{id},
              Data::MessagePack->new->prefer_integer->pack(\%h));
}

# An HTTP server on 127.0.0.1:PORT in a forked process, one child per
# connection: $answer->($socket, $head, $body) writes the response (or does
# not).  Returns its pid, for kill 'TERM'.
sub scripted_backend () {
    my ($port, $answer) = @_;
    my $l = IO::Socket::INET->new(Listen => 16, LocalAddr => "127.0.0.1:$port",
                                  ReuseAddr => 1) or die "listen: $!";
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        $SIG{CHLD} = 'IGNORE';
        while (my $c = $l->accept) {
            next if fork();
            my $head = '';
            $head .= $_ while defined($_ = <$c>) && $_ ne "\r\n";
            my ($len) = $head =~ /^content-length:\s*(\d+)/mi;
            read($c, my $body, $len || 0);
            $answer->($c, $head, $body);
            close $c;
            POSIX::_exit(0);
        }
        POSIX::_exit(0);
    }
    close $l;
    return $pid;
}

# The gateway's server block of the fleet-state tests: the OpenAI API on
# upstream llm, with the debug headers, and llmd_status.
sub gateway_locations () {
    return <<'END';
    location /v1/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
    location = /llmd/status { llmd_status; }
END
}

# N backends that answer with their port, and upstream llm that finds them
# through Redis heartbeats only (no server lines): (http config, addrs).
sub discovered_fleet () {
    my $n = shift;
    my @addr = map { '127.0.0.1:' . rand_port($_) } 1 .. $n;
    my $listen = join '', map { "        listen $_;\n" } @addr;
    my $http = <<"END";
    upstream llm {
        llmd;
        llmd_redis unix:\$TEST_NGINX_REDIS_SOCK interval=50ms allow=127.0.0.1/32;
    }
    server {
$listen
        location / { return 200 "\$server_port\\n"; }
    }
END
    return ($http, @addr);
}

# One command over a fresh connection; binary-safe arguments.
sub redis_cmd () {
    my @args = @_;
    my $s = IO::Socket::UNIX->new(Peer => $ENV{TEST_NGINX_REDIS_SOCK}
                                          || "$RedisDir/redis.sock")
        or die "redis connect: $!";
    binmode $s;
    my $req = '*' . scalar(@args) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @args;
    print $s $req;
    my $r = redis_read($s);
    close $s;
    return $r;
}

# The gateway's prefix keys for a request body (common/ via a small tool).
sub prefix_keys () {
    # with $model: as gateways share them, salted with the model
    my ($body, $block, $model) = @_;
    my $tool = $ENV{TEST_LLMD_PREFIX_KEYS} || 'build/llmd-prefix-keys';
    my $tmp = servroot() . ".body";
    write_file($tmp, $body);
    my $m = defined $model ? " '$model'" : '';
    my @keys = split /\n/, `$tool ${\($block || 256)}$m < $tmp`;
    unlink $tmp;
    return @keys;
}

sub repeat_each () {
    $RepeatEach = shift if @_;
    return $RepeatEach;
}

sub workers () {
    $Workers = shift if @_;
    return $Workers;
}

sub no_shuffle () { }

sub servroot () {
    unless ($ServRoot) {
        my $name = $0;
        $name =~ s{.*/}{};
        $name =~ s{\.t$}{};
        # short: unix socket paths are limited to ~107 bytes
        $ServRoot = $ENV{TEST_NGINX_SERVROOT}
                    || "/tmp/llmd-t-$$-$name";
    }
    return $ServRoot;
}

# The kernel may hand a closed port out again: never the same one twice
# in a test, or nginx refuses a duplicate listen.
my %PortsGiven;

sub free_port () {
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'tcp',
                                      ReuseAddr => 1)
            or die "no free port: $!";
        my $port = $s->sockport;
        close $s;
        next if $PortsGiven{$port}++;
        return $port;
    }
    die "no free port not given already\n";
}

sub server_port () {
    $ServerPort ||= free_port();
    return $ServerPort;
}

sub rand_port () {
    my $i = shift;
    $RandPorts[$i] ||= free_port();
    return $RandPorts[$i];
}

sub expand_vars () {
    my $text = shift;
    return '' unless defined $text;
    $text =~ s/\$TEST_NGINX_SERVER_PORT\b/server_port()/ge;
    $text =~ s/\$TEST_NGINX_RAND_PORT_(\d+)\b/rand_port($1)/ge;
    $text =~ s/\$TEST_NGINX_SERVROOT\b/servroot()/ge;
    $text =~ s/\$(TEST_NGINX_[A-Z0-9_]+)/
              defined $ENV{$1} ? $ENV{$1} : die "$1 is not set\n"/ge;
    return $text;
}

sub write_file () {
    my ($path, $text) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh;
}

sub nginx_conf () {
    my %o = @_;
    my $root = servroot();
    my $user = $> == 0 ? "user root;\n" : '';
    my $load = $Module ? "load_module $Module;\n" : '';
    my $workers = $o{workers} || $Workers;
    my $main = expand_vars($o{main_config});
    my $http = expand_vars($o{http_config});
    my $config = expand_vars($o{config});
    my $port = server_port();
    my $listen = $o{listen_opts} ? " $o{listen_opts}" : '';

    return <<"END";
${load}${user}daemon off;
master_process on;
worker_processes $workers;
error_log $root/logs/error.log debug;
pid $root/logs/nginx.pid;
$main
events {
    worker_connections 1024;
    accept_mutex off;
}

http {
    access_log $root/logs/access.log;
    client_body_temp_path $root/tmp/body;
    proxy_temp_path $root/tmp/proxy;
    fastcgi_temp_path $root/tmp/fastcgi;
    uwsgi_temp_path $root/tmp/uwsgi;
    scgi_temp_path $root/tmp/scgi;
    default_type text/plain;
    keepalive_timeout 65;

$http

    server {
        listen 127.0.0.1:$port$listen;
        server_name localhost;
        client_max_body_size 30M;

$config
    }
}
END
}

sub wait_port () {
    my ($port, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        if ($s) { close $s; return 1; }
        return 0 if $NginxPid && waitpid($NginxPid, WNOHANG) == $NginxPid;
        sleep 0.02;
    }
    return 0;
}

# Writes the configuration, checks it with nginx -t and starts nginx in the
# foreground as our child.  Returns '' on success or the error text.
sub nginx_start () {
    my %o = @_;
    my $root = servroot();

    nginx_stop() if $NginxPid;
    remove_tree($root) unless $o{keep_logs};
    make_path("$root/conf", "$root/logs", "$root/tmp");
    write_file("$root/conf/nginx.conf", nginx_conf(%o));
    $LogOffset = 0;

    my $out = `$Binary -p $root/ -c $root/conf/nginx.conf -t 2>&1`;
    return $out if $? != 0;

    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>>', "$root/logs/stderr.log";
        open STDERR, '>>', "$root/logs/stderr.log";
        exec $Binary, '-p', "$root/", '-c', "$root/conf/nginx.conf";
        exit 127;
    }
    $NginxPid = $pid;

    unless (wait_port(server_port(), 10)) {
        return "nginx did not start: " . error_log_text();
    }
    # let every worker process reach its event loop
    sleep(0.05 * ($o{workers} || $Workers));
    return '';
}

sub nginx_reload () {
    my $root = servroot();
    my %o = @_;
    write_file("$root/conf/nginx.conf", nginx_conf(%o)) if %o;
    kill 'HUP', $NginxPid;
    # the new generation of workers logs "start worker process"
    my $before = () = error_log_text() =~ /start worker process/g;
    my $deadline = time + 10;
    while (time < $deadline) {
        my $now = () = error_log_text() =~ /start worker process/g;
        last if $now > $before;
        sleep 0.05;
    }
    sleep 0.2;
}

sub nginx_stop () {
    return unless $NginxPid;
    kill 'QUIT', $NginxPid;
    my $deadline = time + 10;
    while (time < $deadline) {
        last if waitpid($NginxPid, WNOHANG) == $NginxPid;
        sleep 0.02;
    }
    if (kill 0, $NginxPid) {
        kill 'KILL', $NginxPid;
        waitpid($NginxPid, 0);
    }
    undef $NginxPid;
}

sub error_log_text () {
    my $root = servroot();
    my $text = '';
    for my $f ("$root/logs/error.log", "$root/logs/stderr.log") {
        next unless -f $f;
        open my $fh, '<', $f or next;
        local $/;
        $text .= <$fh>;
        close $fh;
    }
    return $text;
}

# Splits "METHOD URI[ HTTP/x]\nbody" into a raw HTTP/1.1 request.
sub build_request () {
    my ($spec, $headers) = @_;
    my ($line, $body) = split /\n/, $spec, 2;
    $body = '' unless defined $body;
    $body =~ s/\n\z// unless ref $spec;
    $line =~ s/\s+HTTP\/\d\.\d\s*$//;
    my ($method, $uri) = split /\s+/, $line, 2;
    my $raw = "$method $uri HTTP/1.1\r\nHost: localhost\r\n"
              . "Connection: close\r\n";
    my ($have_len, $have_type) = (0, 0);
    for my $h (split /\n/, $headers || '') {
        next unless $h =~ /\S/;
        $have_len = 1 if $h =~ /^(content-length|transfer-encoding)\s*:/i;
        $have_type = 1 if $h =~ /^content-type\s*:/i;
        # "Name:" with no value sends no such header, as with curl -H 'Name:'
        next if $h =~ /^[\w-]+\s*:\s*$/;
        $raw .= "$h\r\n";
    }
    if (length $body || $method =~ /^(POST|PUT|PATCH)$/) {
        $raw .= "Content-Length: " . length($body) . "\r\n" unless $have_len;
    }
    # OpenAI clients send JSON bodies as application/json
    if (length $body && !$have_type) {
        $raw .= "Content-Type: application/json\r\n";
    }
    return "$raw\r\n$body";
}

sub parse_response () {
    my ($raw) = @_;
    my %res = (status => 0, headers => {}, body => '', raw => $raw);
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    return \%res unless defined $head;
    my @lines = split /\r\n/, $head;
    my $status = shift @lines;
    ($res{status}) = $status =~ m{^HTTP/\d\.\d\s+(\d+)};
    $res{status} ||= 0;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        my $lk = lc $k;
        $res{headers}{$lk} = exists $res{headers}{$lk}
                             ? "$res{headers}{$lk}, $v" : $v;
    }
    $body = '' unless defined $body;
    if (($res{headers}{'transfer-encoding'} || '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n, '');
            $body =~ s/^\r\n//;
        }
        $body = $out;
    }
    $res{body} = $body;
    return \%res;
}

# Sends requests (each "METHOD URI\nbody"), $parallel at a time, and
# returns their parsed responses in order.
sub send_requests () {
    my ($specs, $headers, $parallel, $timeout) = @_;
    my @res;
    my @queue = @$specs;
    my $idx = 0;
    $parallel ||= 1;
    $timeout ||= 10;

    while (@queue) {
        my @batch = splice @queue, 0, $parallel;
        my (%conn, %buf, %start, %first);
        my $sel = IO::Select->new;
        for my $spec (@batch) {
            my $i = $idx++;
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => server_port(),
                                          Proto => 'tcp', Timeout => 5);
            unless ($s) { $res[$i] = { status => 0, headers => {},
                                       body => '', error => "$!" }; next }
            $start{$i} = time;
            my $raw = build_request($spec, ref $headers ? $headers->[$i]
                                                        : $headers);
            my $off = 0;
            while ($off < length $raw) {
                my $n = syswrite($s, $raw, length($raw) - $off, $off);
                last unless defined $n && $n > 0;
                $off += $n;
            }
            $conn{fileno $s} = [$s, $i];
            $buf{$i} = '';
            $sel->add($s);
        }
        my $deadline = time + $timeout;
        while ($sel->count && time < $deadline) {
            for my $s ($sel->can_read(0.1)) {
                my ($sock, $i) = @{ $conn{fileno $s} };
                my $n = sysread($sock, my $chunk, 65536);
                if (!$n) {
                    $sel->remove($sock);
                    close $sock;
                    next;
                }
                $buf{$i} .= $chunk;
                if (!defined $first{$i} && $buf{$i} =~ /\r\n\r\n(.)/s) {
                    $first{$i} = time - $start{$i};
                }
            }
        }
        for my $c (values %conn) {
            my ($sock, $i) = @$c;
            $res[$i] = parse_response($buf{$i});
            $res[$i]{first_body_byte} = $first{$i};
            $res[$i]{timed_out} = 1 if $sel->exists($sock);
        }
    }
    return @res;
}

sub nginx_request () {
    my ($spec, $headers) = @_;
    my ($res) = send_requests([$spec], $headers, 1);
    return $res;
}

sub sanitizer_report () {
    my $log = error_log_text();
    return $1 if $log =~ /((?:ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer)[^\n]*)/;
    return undef;
}

# A section's value, or undef when no block of the file has it.
sub sec () {
    my ($block, $name) = @_;
    return undef unless $block->can($name);
    my $v = $block->$name;      # scalar context: an eval'd array stays a ref
    return $v;
}

sub check_block () {
    my ($block, $name, $res) = @_;
    my @res = @$res;
    my $n = scalar @res;

    my $codes = sec($block, 'error_code');
    if (defined $codes) {
        my @want = ref $codes ? @$codes : ($codes) x $n;
        for my $i (0 .. $n - 1) {
            (my $w = $want[$i]) =~ s/\s+//g;
            is($res[$i]{status}, $w, "$name - status code ok (req $i)");
        }
    } elsif (!defined sec($block, 'ignore_response')) {
        for my $i (0 .. $n - 1) {
            is($res[$i]{status}, 200, "$name - status code ok (req $i)");
        }
    }

    my $body = sec($block, 'response_body');
    if (defined $body) {
        my @want = ref $body ? @$body : ($body) x $n;
        for my $i (0 .. $n - 1) {
            is($res[$i]{body}, $want[$i], "$name - response_body (req $i)");
        }
    }

    my $like = sec($block, 'response_body_like');
    if (defined $like) {
        my @want = ref $like eq 'ARRAY' ? @$like : ($like) x $n;
        for my $i (0 .. $n - 1) {
            my $re = ref $want[$i] ? $want[$i] : qr/$want[$i]/s;
            like($res[$i]{body}, $re, "$name - response_body_like (req $i)");
        }
    }

    for my $sec (qw(response_headers response_headers_like)) {
        my $spec = sec($block, $sec);
        next unless defined $spec;
        for my $line (split /\n/, $spec) {
            next unless $line =~ /\S/;
            my ($k, $v) = $line =~ /^\s*(!?[^:]+?)\s*:\s*(.*?)\s*$/
                or $line =~ /^\s*(![^:\s]+)\s*$/ or next;
            for my $i (0 .. $n - 1) {
                if ($k =~ s/^!//) {
                    ok(!exists $res[$i]{headers}{lc $k},
                       "$name - header $k absent (req $i)");
                    $k = "!$k";
                    next;
                }
                my $got = $res[$i]{headers}{lc $k};
                if ($sec eq 'response_headers') {
                    is($got, $v, "$name - header $k (req $i)");
                } else {
                    like($got // '', qr/$v/, "$name - header $k like (req $i)");
                }
            }
        }
    }

    if (defined(my $re = sec($block, 'upstreams_like'))) {
        my $ups = join ' ', map { $_->{headers}{'x-llmd-upstream'} // '-' } @res;
        like($ups, qr/$re/, "$name - upstreams_like");
    }

    if (defined(my $s = sec($block, 'first_body_byte_within'))) {
        for my $i (0 .. $n - 1) {
            my $t = $res[$i]{first_body_byte};
            ok(defined $t && $t <= $s,
               "$name - first body byte within ${s}s (req $i): "
               . (defined $t ? sprintf("%.3fs", $t) : 'none'));
        }
    }

    my $log = error_log_text();
    for my $sec (qw(error_log no_error_log)) {
        my $spec = sec($block, $sec);
        next unless defined $spec;
        my @pats = ref $spec eq 'ARRAY' ? @$spec
                   : ref $spec ? ($spec) : split /\n/, $spec;
        for my $p (@pats) {
            next unless ref $p || $p =~ /\S/;
            my $found = ref $p ? $log =~ $p : index($log, $p) >= 0;
            if ($sec eq 'error_log') {
                ok($found, "$name - error_log has: $p");
            } else {
                ok(!$found, "$name - error_log lacks: $p");
            }
        }
    }

    if ($CheckSanitizer) {
        my $r = sanitizer_report();
        ok(!defined $r, "$name - no sanitizer report" . ($r ? ": $r" : ''));
    }
}

sub run_block () {
    my $block = shift;
    my $name = sec($block, 'name');

    my $err = nginx_start(main_config => sec($block, 'main_config'),
                          http_config => sec($block, 'http_config'),
                          config => sec($block, 'config'),
                          workers => sec($block, 'workers'));
    if (defined sec($block, 'must_die')) {
        ok($err ne '', "$name - nginx refused the configuration");
        nginx_stop();
        for my $p (split /\n/, sec($block, 'error_log') // '') {
            next unless $p =~ /\S/;
            ok(index($err, $p) >= 0, "$name - nginx -t says: $p");
        }
        return;
    }

    if ($err) {
        fail("$name - nginx started: $err");
        nginx_stop();
        return;
    }

    my $req = sec($block, 'request');
    my @specs = ref $req eq 'ARRAY' ? @$req : ($req);

    my @res = send_requests(\@specs, sec($block, 'more_headers'),
                            sec($block, 'parallel') || 1, sec($block, 'timeout') || 10);

    if (defined(my $w = sec($block, 'wait'))) {
        sleep $w;
    }

    nginx_stop();
    check_block($block, $name, \@res);
}

sub run_tests () {
    # Test::Base compares sections itself at exit unless a plan exists
    plan('no_plan') unless Test::Builder->new->has_plan;
    for my $block (blocks()) {
        for my $r (1 .. $RepeatEach) {
            run_block($block);
        }
    }
}

END {
    return if $$ != $OwnerPid;
    nginx_stop() if $NginxPid;
    redis_stop() if $RedisPid;
    remove_tree($RedisDir) if $RedisDir;
    if ($ServRoot && !$ENV{TEST_NGINX_KEEP}) {
        remove_tree($ServRoot);
    }
}

package Test::LLMD::Filter;

use Test::Base::Filter -Base;

1;
