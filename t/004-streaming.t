# Streaming responses, large and spooled bodies, unbuffered request bodies.

use lib 't/lib';
use Test::LLMD;

our $stream = "POST /v1/completions\n" . '{"prompt":"tell me a story","stream":true}';
our $nostream = "POST /v1/completions\n" . '{"prompt":"tell me a story","stream":false}';
# 64 KiB of prompt: spooled to a temporary file by nginx before we read it
our $big = "POST /v1/completions\n" . '{"prompt":"' . ('0123456789abcdef' x 4096) . '"}';

run_tests();

__DATA__

=== TEST 1: stream:true -> SSE chunks reach the client as they are produced
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            default_type text/event-stream;
            echo "data: {\"choices\":[{\"text\":\"Once\"}]}";
            echo "";
            echo_flush;
            echo_sleep 1.5;
            echo "data: [DONE]";
            echo "";
        }
    }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request eval
$main::stream
--- response_body_like: ^data: \{"choices":\[\{"text":"Once"\}\]\}\n\ndata: \[DONE\]\n\n$
--- response_headers
Content-Type: text/event-stream
--- first_body_byte_within: 1.0



=== TEST 2: without stream, proxy buffering stays as configured
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            echo "part one";
            echo_flush;
            echo_sleep 1.5;
            echo "part two";
        }
    }
--- config
    location /v1/ {
        proxy_buffering on;
        proxy_buffer_size 64k;
        proxy_buffers 4 64k;
        proxy_pass http://llm;
    }
--- request eval
$main::nostream
--- response_body
part one
part two



=== TEST 3: a 64 KiB prompt spooled to a temporary file is inspected whole
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 200 "length $http_content_length\n"; }
    }
--- config
    location /v1/ {
        client_body_buffer_size 8k;
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
$main::big
--- response_body
length 65549
--- response_headers
X-LLMD-Prefix-Blocks: 0/256
--- error_log
a client request body is buffered to a temporary file



=== TEST 4: proxy_request_buffering off: still inspected, body forwarded intact
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        client_body_buffer_size 128k;
        location / {
            echo_read_request_body;
            echo "length $http_content_length";
            echo_request_body;
        }
    }
--- config
    location /v1/ {
        proxy_request_buffering off;
        client_body_buffer_size 8k;
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
$main::big
--- response_body_like: ^length 65549\n\{"prompt":"(0123456789abcdef){4096}"\}$
--- response_headers
X-LLMD-Prefix-Blocks: 0/256



=== TEST 5: the variables serve log_format
--- http_config
    log_format llmd '$llmd_peer $llmd_prefix_hit $llmd_pick_reason $llmd_prompt_bytes';
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 200 "ok\n"; }
    }
--- config
    location /v1/ {
        access_log $TEST_NGINX_SERVROOT/logs/error.log llmd;
        proxy_pass http://llm;
    }
--- request eval
["POST /v1/completions\n{\"prompt\":\"" . ("p" x 600) . "\"}",
 "POST /v1/completions\n{\"prompt\":\"" . ("p" x 600) . "\"}"]
--- response_body
ok
--- error_log eval
[qr/127\.0\.0\.1:\d+ 0\/2 load 600/, qr/127\.0\.0\.1:\d+ 0\/2 load 600/]
