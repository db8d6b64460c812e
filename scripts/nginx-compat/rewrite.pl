#!/usr/bin/perl
# Rewrites one nginx-tests file for the drop-in comparison, on stdout.
#   --llmd    insert "llmd;" into every http upstream {} block that does not
#             already choose a balancer (hash, ip_hash, least_conn, random)
#   --direct  send each direct proxy_pass/grpc_pass to 127.0.0.1:PORT through
#             a one-server upstream of its own instead, so that the request
#             goes through a balancer at all
# stream {} blocks are left alone: llmd balances http upstreams only.
# Prints nothing to stderr; exits 0 even when there was nothing to change.
use strict;
use warnings;

my ($llmd, $direct) = (0, 0);
while (@ARGV && $ARGV[0] =~ /^--/) {
    my $o = shift;
    $llmd = 1 if $o eq '--llmd';
    $direct = 1 if $o eq '--direct';
}
my @lines = <>;

my $balancer = qr/^\s*(hash|ip_hash|least_conn|random|llmd)\b/;

# which lines lie inside a stream {} block (brace depth from its opening)
sub stream_lines {
    my @in;
    my $depth = 0;
    for my $i (0 .. $#lines) {
        if (!$depth && $lines[$i] =~ /^\s*stream\s*\{/) {
            $depth = 0;
            $in[$i] = 1;
            $depth += () = $lines[$i] =~ /\{/g;
            $depth -= () = $lines[$i] =~ /\}/g;
            next;
        }
        if ($depth) {
            $in[$i] = 1;
            $depth += () = $lines[$i] =~ /\{/g;
            $depth -= () = $lines[$i] =~ /\}/g;
            $depth = 0 if $depth < 0;
        }
    }
    return @in;
}

my @stream = stream_lines();
my %direct_ups;          # upstream name => "host:port", per file

if ($direct) {
    for my $i (0 .. $#lines) {
        next if $stream[$i];
        $lines[$i] =~ s{
            \b(proxy_pass\s+(?:https?)://|grpc_pass\s+(?:grpcs?://)?)
            127\.0\.0\.1:(\d+)
            (?=[/;\$\s])
        }{
            $direct_ups{"llmd_direct_$2"} = "127.0.0.1:$2";
            "$1llmd_direct_$2"
        }gex;
    }
}

my @out;
for my $i (0 .. $#lines) {
    my $line = $lines[$i];
    push @out, $line;
    next if $stream[$i];

    if ($direct && %direct_ups && $line =~ /^(\s*)http\s*\{/) {
        my $ind = "$1    ";
        for my $name (sort keys %direct_ups) {
            push @out, "${ind}upstream $name {\n",
                       ($llmd ? "${ind}    llmd;\n" : ()),
                       "${ind}    server $direct_ups{$name};\n",
                       "${ind}}\n";
        }
        next;
    }

    if ($llmd && $line =~ /^(\s*)upstream\s+\S+\s*\{\s*$/) {
        my $ind = "$1    ";
        my $chooses = 0;
        for my $j ($i + 1 .. $#lines) {
            last if $lines[$j] =~ /^\s*\}/;
            $chooses = 1 if $lines[$j] =~ $balancer;
        }
        push @out, "${ind}llmd;\n" unless $chooses;
    }
}

print @out;
