# The example configurations in examples/ are accepted by nginx with the module
# loaded (nginx -t), with their log paths and ports moved into a scratch
# directory.

use lib 't/lib';
use Test::LLMD;
use Test::More;
use File::Path qw(make_path);

my $binary = $ENV{TEST_NGINX_BINARY} || 'nginx';
my $module = $ENV{TEST_NGINX_LOAD_MODULE};
my $root = servroot();
make_path("$root/logs");

for my $file (sort glob 'examples/*.conf') {
    open my $fh, '<', $file or die "$file: $!";
    my $conf = do { local $/; <$fh> };
    $conf =~ s{/var/log/nginx/}{$root/logs/}g;
    $conf =~ s{listen \d+;}{'listen 127.0.0.1:' . rand_port(1) . ';'}ge;
    my $head = ($module ? "load_module $module;\n" : '')
             . ($> == 0 ? "user root;\n" : '')
             . "pid $root/logs/nginx.pid;\nerror_log $root/logs/error.log;\n";
    (my $name = $file) =~ s{.*/}{};
    open my $out, '>', "$root/$name" or die;
    print $out $head, $conf;
    close $out;
    my $res = `$binary -p $root/ -c $root/$name -t 2>&1`;
    is($?, 0, "$file: nginx -t accepts it") or diag $res;
}

done_testing();
