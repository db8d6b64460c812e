# Peer states and retries behave as with the stock balancers.

use lib 't/lib';
use Test::LLMD;

our $four = [map { "POST /v1/completions\n{\"prompt\":\"request $_ " . ("x" x 300) . "\"}" } 1 .. 4];

run_tests();

__DATA__

=== TEST 1: a dead peer is retried on the next one before the first byte
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 200 "live\n"; } }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request eval
$main::four
--- response_body
live
--- error_log
connect() failed (111: Connection refused)



=== TEST 2: max_fails takes a failed peer out for fail_timeout
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 200 "live\n"; } }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request eval
$main::four
--- response_body
live
--- error_log
upstream server temporarily disabled
--- no_error_log eval
[qr/Connection refused.*\n(?s:.*)Connection refused/]



=== TEST 3: down peers are never picked
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 down;
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
$main::four
--- upstreams_like: ^(\S+)( \1){3}$
--- no_error_log
[error]



=== TEST 4: the backup peer serves only when the primaries fail
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 backup;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 200 "backup\n"; } }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request eval
$main::four
--- response_body
backup



=== TEST 5: a response already started is not retried (clean error after)
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 500 "worker failed\n"; }
    }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
POST /v1/completions
{"prompt":"x"}
--- error_code: 500
--- response_body
worker failed



=== TEST 6: keepalive to workers works after llmd
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        keepalive 8;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "$connection_requests\n"; } }
--- config
    location /v1/ {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://llm;
    }
--- request eval
$main::four
--- response_body eval
["1\n", "2\n", "3\n", "4\n"]
