#!/usr/bin/perl
# Reads the TAP of the four nginx-compat runs and writes the comparison as
# markdown: per file the passed/failed/skipped counts of each run, then every
# test that passes stock (or in the direct control) and fails with llmd.
# Usage: compare.pl RUNDIR FILE...
use strict;
use warnings;

my ($dir, @files) = @ARGV;
my @runs = qw(stock llmd direct direct-llmd);

# status of each test number: ok, fail, skip or todo (TODO tests are known
# failures of nginx itself and count for nothing)
sub results {
    my ($tap) = @_;
    my (%st, $plan, $why);
    open my $fh, '<', $tap or return ({}, 0, 'no output');
    while (<$fh>) {
        if (/^1\.\.(\d+)(?:\s*#\s*(?:skip|SKIP)\S*\s*(.*))?/) {
            ($plan, $why) = ($1, $2);
        } elsif (/^(not )?ok (\d+)\b(.*)/) {
            my ($not, $n, $rest) = ($1, $2, $3);
            $st{$n} = $rest =~ /#\s*TODO/i ? 'todo'
                    : $rest =~ /#\s*skip/i ? 'skip'
                    : $not ? 'fail' : 'ok';
        }
    }
    $plan //= 0;
    for my $n (1 .. $plan) {
        $st{$n} //= 'fail';          # planned, never reported: it died
    }
    return (\%st, $plan, $why);
}

my (%total, @regress, @rewrite);
my @rows;
for my $f (@files) {
    my (%r, %why);
    for my $run (@runs) {
        my ($st, $plan, $why) = results("$dir/$run/$f.tap");
        $r{$run} = $st;
        $why{$run} = $why;
    }
    my @cells;
    for my $run (@runs) {
        my %c = (ok => 0, fail => 0, skip => 0, todo => 0);
        $c{$_}++ for values %{ $r{$run} };
        $total{$run}{$_} += $c{$_} for keys %c;
        push @cells, %{ $r{$run} } ? "$c{ok}/$c{fail}/$c{skip}"
                                   : 'skipped' . ($why{$run} ? ": $why{$run}" : '');
    }
    push @rows, "| $f | " . join(' | ', @cells) . " |";

    my %nums = map { $_ => 1 } map { keys %{ $r{$_} } } @runs;
    for my $n (sort { $a <=> $b } keys %nums) {
        my %s = map { $_ => ($r{$_}{$n} // 'none') } @runs;
        push @regress, "$f test $n: passes stock, fails with llmd"
            if $s{stock} eq 'ok' && $s{llmd} ne 'ok' && $s{llmd} ne 'todo';
        push @regress, "$f test $n: passes in the direct control, fails with llmd"
            if $s{direct} eq 'ok' && $s{'direct-llmd'} ne 'ok'
               && $s{'direct-llmd'} ne 'todo';
        push @rewrite, "$f test $n"
            if $s{stock} eq 'ok' && $s{direct} ne 'ok';
    }
}

print "# nginx-tests with llmd: the drop-in comparison\n\n";
print "Made by `make test-nginx-compat` (scripts/nginx-compat.sh). ",
      "Cells are passed/failed/skipped tests; TODO tests (known nginx ",
      "failures) are left out.\n\n";
print "| file | " . join(' | ', @runs) . " |\n";
print "|---" x (@runs + 1) . "|\n";
print "$_\n" for @rows;
print "| **all " . scalar(@files) . " files** | "
    . join(' | ', map { "$total{$_}{ok}/$total{$_}{fail}/$total{$_}{skip}" } @runs)
    . " |\n\n";
print "Changed by the direct-pass rewrite alone (stock passes, the control ",
      "fails; not llmd's doing): ", (@rewrite ? join(', ', @rewrite) : 'none'),
      "\n\n";
print "Passing stock or in the control and failing with llmd:\n";
print @regress ? map({ "- $_\n" } @regress) : "- none\n";
print "\nregressions: " . scalar(@regress) . "\n";
