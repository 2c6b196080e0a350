#!/usr/bin/perl
# Mail::DKIM over a corpus directory (the DKIM differential suite, CI only). Every key lookup
# goes to the resolver given here: 127.0.0.1 port ARGV[1] (.ci/dkim-verifiers/dns_server.py), nothing else.
# Usage: maildkim.pl CORPUS_DIR PORT. Prints FAIL lines and a summary; exit 1 on any failure.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;
use Mail::DKIM;

my ($dir, $port) = @ARGV;
my $res = Net::DNS::Resolver->new(
    nameservers => ['127.0.0.1'],
    port        => $port,
    recurse     => 0,
    udp_timeout => 5,
    tcp_timeout => 5,
    retry       => 1,
);
Mail::DKIM::DNS::resolver($res);

opendir(my $dh, $dir) or die "cannot open $dir: $!";
my @files = sort grep { /\.eml$/ } readdir($dh);
closedir($dh);
my ($n, $bad, $no_ed25519) = (0, 0, 0);
for my $f (@files) {
    $n++;
    open(my $fh, '<:raw', "$dir/$f") or die "$f: $!";
    local $/;
    my $data = <$fh>;
    close($fh);
    my $dkim = Mail::DKIM::Verifier->new();
    $dkim->PRINT($data);
    $dkim->CLOSE();
    # Mail::DKIM before 1.20240827 (Debian bookworm has 1.20230212) does not implement
    # ed25519-sha256 (RFC 8463) at all: such cases are counted apart, never as passes.
    if ($dkim->result ne 'pass' && ($dkim->result_detail // '') =~ /unsupported algorithm ed25519-sha256/) {
        $no_ed25519++;
        next;
    }
    if ($dkim->result ne 'pass') {
        $bad++;
        print "FAIL $f ", $dkim->result_detail, "\n";
    }
}
my $checked = $n - $no_ed25519;
print "Mail::DKIM $Mail::DKIM::VERSION: $n cases, $checked verified, $bad failed",
  ($no_ed25519 ? ", $no_ed25519 ed25519-sha256 cases not checked (this Mail::DKIM has no Ed25519)" : ""), "\n";
$bad++ if $checked == 0;
exit($bad ? 1 : 0);
