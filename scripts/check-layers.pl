#!/usr/bin/perl
# make check-layers: no #include from a lower layer to a higher one.
#
# The layers are the ```layers block of docs/architecture.md, lowest first:
# a file may include files of its own layer and of layers listed before it.
# The ```interfaces block names, for a layer, the only headers the layers
# above it may include (the rest is that layer's inside).  Besides, the
# gateway module and the workers never include each other: common/ is all
# they share.  Prints each offending include; exits 1 if there is any.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Find;
use File::Spec;

my $top = File::Spec->rel2abs(dirname($0) . '/..');
chdir $top or die "$top: $!";

open my $doc, '<', 'docs/architecture.md' or die "docs/architecture.md: $!";
my (@layers, %iface, $block);
while (<$doc>) {
    if (/^```(layers|interfaces)\s*$/) { $block = $1; next }
    if (/^```/) { $block = undef; next }
    next unless $block && /^(\S+)(?:\s+(.*))?$/;
    if ($block eq 'layers') {
        push @layers, $1;
    } else {
        $iface{$1} = { map { $_ => 1 } split ' ', ($2 // '') };
    }
}
die "docs/architecture.md has no ```layers block\n" unless @layers;

# the layer of a path: the longest entry that is it or a folder above it
sub layer_of {
    my ($path) = @_;
    my ($best, $len) = (undef, -1);
    for my $i (0 .. $#layers) {
        my $l = $layers[$i];
        my $hit = $l =~ m{/$} ? index($path, $l) == 0 : $path eq $l;
        ($best, $len) = ($i, length $l) if $hit && length $l > $len;
    }
    return $best;
}

# the sources, found on disk: a checkout without git (an archive, a fresh
# machine) has them too; build folders are not sources
my @dirs = ('common', 'ngx_llmd_module', 'workers/src', 'workers/tools');
my @files;
find({ no_chdir => 1, wanted => sub {
           $File::Find::prune = 1 if -d && m{/build$};
           push @files, $_ if -f && /\.(c|h|cu|cuh)$/;
       } }, grep { -d } @dirs);
@files = sort @files;
die "check-layers: no sources under @dirs\n" unless @files;

# where "#include "x"" in $file lands: its own folder first, then the -I
# folders of its build
sub resolve {
    my ($file, $inc) = @_;
    my @search = (dirname($file));
    push @search, $file =~ m{^workers/} ? ('workers/src', 'workers/tools', 'common')
                : $file =~ m{^ngx_llmd_module/} ? ('ngx_llmd_module', 'common')
                : ('common');
    for my $d (@search) {
        my $p = File::Spec->canonpath("$d/$inc");
        1 while $p =~ s{(^|/)(?!\.\.)[^/]+/\.\.(/|$)}{$1};
        return $p if -f $p;
    }
    return undef;
}

my ($bad, $checked) = (0, 0);
for my $f (@files) {
    my $lf = layer_of($f);
    unless (defined $lf) { print "$f: in no layer of docs/architecture.md\n"; $bad++; next }
    open my $fh, '<', $f or die "$f: $!";
    while (my $line = <$fh>) {
        next unless $line =~ /^\s*#\s*include\s+"([^"]+)"/;
        my $t = resolve($f, $1) // next;      # a system or generated header
        $checked++;
        my $lt = layer_of($t);
        next unless defined $lt;
        my $why;
        if (($f =~ m{^workers/} && $t =~ m{^ngx_llmd_module/})
            || ($f =~ m{^ngx_llmd_module/} && $t =~ m{^workers/})) {
            $why = 'the module and the workers share only common/';
        } elsif ($lt > $lf) {
            $why = "$layers[$lf] is below $layers[$lt]";
        } elsif ($lt != $lf && $f =~ m{^workers/src/} && $iface{$layers[$lt]}) {
            (my $name = $t) =~ s{.*/}{};
            $why = "only " . join(', ', sort keys %{ $iface{$layers[$lt]} })
                 . " of $layers[$lt] is its interface"
                unless $iface{$layers[$lt]}{$name};
        }
        next unless $why;
        print "$f:$.: includes $t: $why\n";
        $bad++;
    }
}
print "check-layers: ", scalar(@files), " files, $checked includes, ",
      ($bad ? "$bad against the layers" : "none against the layers"), "\n";
exit($bad ? 1 : 0);
