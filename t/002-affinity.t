# Prefix affinity, spreading and the imbalance fallback.

use lib 't/lib';
use Test::LLMD;

my $sys = "You are a meticulous assistant for the ACME knowledge base. " x 30;

sub chat { my ($q) = @_;
    return "POST /v1/chat/completions\n"
        . qq({"model":"m","max_tokens":16,"messages":[{"role":"system","content":"$sys"},)
        . qq({"role":"user","content":"$q"}]}) }

our $chat4 = [map { chat($_) } "What is ACME?", "Who founded it?",
                                 "Where is it based?", "How big is it?"];
our $distinct6 = [map { "POST /v1/completions\n" . qq({"prompt":") . ("$_ distinct prompt " x 40) . qq("}) } 1 .. 6];
our $chat12 = [map { chat("question $_") } 1 .. 12];

run_tests();

__DATA__

=== TEST 1: same long system prompt, different questions -> same peer
--- http_config
    upstream llm {
        llmd;
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
$main::chat4
--- upstreams_like: ^(\S+)( \1){3}$
--- response_headers_like
X-LLMD-Pick: ^(load|affinity)$
X-LLMD-Prefix-Blocks: ^\d+/7$
--- no_error_log
[error]



=== TEST 2: distinct prompts spread evenly over the peers
--- http_config
    upstream llm {
        llmd;
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
$main::distinct6
--- upstreams_like: ^(\S+) (?!\1)(\S+) (?!\1|\2)(\S+) \1 \2 \3$
--- response_headers_like
X-LLMD-Pick: ^load$
X-LLMD-Prefix-Blocks: ^0/\d+$



=== TEST 3: under concurrency, stickiness holds while load is balanced enough
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        llmd_balance_threshold 100 1.5;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { echo_sleep 0.5; echo $server_port; }
    }
--- config
    location /v1/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
$main::chat12
--- parallel: 12
--- upstreams_like: ^(\S+)( \1){11}$



=== TEST 4: past the imbalance threshold, load wins over affinity
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        llmd_balance_threshold 2 1.5;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { echo_sleep 0.5; echo $server_port; }
    }
--- config
    location /v1/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
$main::chat12
--- parallel: 12
--- upstreams_like: ^(\S+)(?: \S+)* (?!\1)\S+
--- response_headers_like
X-LLMD-Pick: ^(load|affinity|balance)$



=== TEST 5: weight scales load; a partial match beats a cold peer only while load allows
--- http_config
    upstream llm {
        llmd;
        llmd_prefix_weight 0;
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
$main::chat4
--- upstreams_like: ^(\S+) (?!\1)(\S+) \1 \2$
