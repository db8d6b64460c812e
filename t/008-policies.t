# The reference policies (llmd_policy llm-d | dynamo) and the decision-time
# variable.

use lib 't/lib';
use Test::LLMD;

my $sys = "A long shared system prompt for the reference policies. " x 25;
our $same = [map { "POST /v1/chat/completions\n" . qq({"max_tokens":8,"messages":[{"role":"system","content":"$sys"},{"role":"user","content":"q$_"}]}) } 1 .. 4];
our $distinct = [map { "POST /v1/completions\n" . qq({"prompt":") . ("$_ unique words " x 40) . qq("}) } 1 .. 4];

run_tests();

__DATA__

=== TEST 1: llm-d reference: affinity filter keeps the prefix holder
--- http_config
    upstream llm {
        llmd;
        llmd_policy llm-d;
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
--- config
    location /v1/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
$main::same
--- upstreams_like: ^(\S+)( \1){3}$
--- response_headers
X-LLMD-Pick: llm-d



=== TEST 2: llm-d reference: distinct prompts spread
--- http_config
    upstream llm {
        llmd;
        llmd_policy llm-d;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { return 200 "$server_port\n"; }
    }
--- config
    location /v1/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
$main::distinct
--- upstreams_like: ^(\S+) (?!\1)(\S+) \1 \2$



=== TEST 3: Dynamo reference: the holder has fewer prefill blocks
--- http_config
    upstream llm {
        llmd;
        llmd_policy dynamo;
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
--- config
    location /v1/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
$main::same
--- upstreams_like: ^(\S+)( \1){3}$
--- response_headers
X-LLMD-Pick: dynamo



=== TEST 4: the decision time is measured inside nginx
--- http_config
    log_format d 'decision=$llmd_decision_us';
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "ok\n"; } }
--- config
    location /v1/ {
        access_log $TEST_NGINX_SERVROOT/logs/error.log d;
        proxy_pass http://llm;
    }
--- request eval
$main::same->[0]
--- response_body
ok
--- error_log eval
qr/decision=\d+\.\d\b/



=== TEST 5: an unknown policy is a configuration error
--- http_config
    upstream llm {
        llmd;
        llmd_policy fastest;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
GET /v1/models
--- must_die
--- error_log
invalid value "fastest"
