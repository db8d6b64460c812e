# Which bodies are inspected: only those with a JSON media type
# (application/json or application/...+json, parameters allowed).  Anything
# else, including a body with no Content-Type, is balanced on load alone and
# forwarded untouched, as stock nginx forwards it.  A malformed JSON body
# tells the two apart: inspected it gets the gateway's 400, forwarded it
# reaches the backend.

use lib 't/lib';
use Test::LLMD;

run_tests();

__DATA__

=== TEST 1: no Content-Type, form body: forwarded untouched
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { echo_read_request_body; echo "got [$content_type] $request_body"; }
    }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
POST /v1/chat/completions
a=1&b=2
--- more_headers
Content-Type:
--- response_body
got [] a=1&b=2
--- no_error_log
llmd: rejected request body



=== TEST 2: no Content-Type, JSON-looking body: not inspected, forwarded
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { echo_read_request_body; echo "got [$content_type] $request_body"; }
    }
--- config
    location /v1/ { llmd_debug_headers on; proxy_pass http://llm; }
--- request
POST /v1/completions
{"model":"m","prompt":
--- more_headers
Content-Type:
--- response_body
got [] {"model":"m","prompt":
--- response_headers_like
X-LLMD-Upstream: ^127\.0\.0\.1:\d+$
X-LLMD-Prefix-Blocks: ^0/0$
--- no_error_log
llmd: rejected request body



=== TEST 3: application/json with a charset parameter is inspected
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
POST /v1/completions
{"model":"m","prompt":
--- more_headers
Content-Type: Application/JSON ; charset=utf-8
--- error_code: 400
--- response_body_like: ^\{"error":\{"message":"invalid JSON in request body
--- error_log
llmd: rejected request body



=== TEST 4: a valid body with charset reaches a backend with its prefix keys
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ { llmd_debug_headers on; proxy_pass http://llm; }
--- request eval
"POST /v1/completions\n" . '{"model":"m","prompt":"' . ('abcd ' x 400) . '"}'
--- more_headers
Content-Type: application/json; charset=utf-8
--- response_body
REACHED
--- response_headers_like
X-LLMD-Prefix-Blocks: ^0/[1-9]\d*$



=== TEST 5: a +json structured-syntax type is inspected
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
POST /v1/completions
{"model":"m","prompt":
--- more_headers
Content-Type: application/vnd.api+json
--- error_code: 400
--- response_body_like: ^\{"error":\{"message":"invalid JSON in request body
--- error_log
llmd: rejected request body



=== TEST 6: a type that merely contains "json" is not
--- main_config
    load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { echo_read_request_body; echo "got [$content_type] $request_body"; }
    }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
POST /v1/completions
{"a":1}
{"b":
--- more_headers
Content-Type: application/x-ndjson
--- response_body
got [application/x-ndjson] {"a":1}
{"b":
--- no_error_log
llmd: rejected request body
