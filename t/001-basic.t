# Basic routing: the module loads, inference requests are inspected and
# balanced, other requests pass through.

use lib 't/lib';
use Test::LLMD;

run_tests();

__DATA__

=== TEST 1: module loads; a chat request reaches a backend
--- http_config
    upstream llm {
        llmd;
        llmd_zone llm 1m;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "A\n"; } }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 200 "B\n"; } }
--- config
    location /v1/ {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request
POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","content":"hello"}]}
--- more_headers
Content-Type: application/json
--- response_body_like: ^[AB]\n$
--- response_headers_like
X-LLMD-Upstream: ^127\.0\.0\.1:\d+$
X-LLMD-Prefix-Blocks: ^0/0$
--- no_error_log
[alert]
[emerg]



=== TEST 2: GET requests pass through with plain balancing
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "A $request_method $uri\n"; } }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; location / { return 200 "B $request_method $uri\n"; } }
--- config
    location / {
        llmd_debug_headers on;
        proxy_pass http://llm;
    }
--- request eval
["GET /v1/models", "GET /health", "GET /v1/models", "GET /health"]
--- response_body_like eval
[qr{^[AB] GET /v1/models\n$}, qr{^[AB] GET /health\n$}, qr{^[AB] GET /v1/models\n$}, qr{^[AB] GET /health\n$}]
--- upstreams_like: ^(\S+) (?!\1)\S+ \1 (?!\1)\S+$
--- no_error_log
[error]



=== TEST 3: a non-JSON POST passes through untouched
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 200 "got $content_type $http_content_length\n"; }
    }
--- config
    location / {
        proxy_pass http://llm;
    }
--- request
POST /v1/audio/transcriptions
this is not json {{{
--- more_headers
Content-Type: multipart/form-data; boundary=x
--- response_body
got multipart/form-data; boundary=x 20
