# Bad input: OpenAI-style errors, and nothing reaches a backend.

use lib 't/lib';
use Test::LLMD;

our $big = "POST /v1/completions\n" . '{"prompt":"' . ('x' x 3000) . '"}';
our $chunked_big = "POST /v1/completions\n" . sprintf("%x\r\n%s\r\n0\r\n\r\n", 3012, '{"prompt":"' . ('x' x 3000) . '"}');

run_tests();

__DATA__

=== TEST 1: malformed JSON -> 400 with an OpenAI error body
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
POST /v1/chat/completions
{"model":"m","messages":[{"role":"user","content":"hi"}
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like: ^\{"error":\{"message":"invalid JSON in request body: [^"]+","type":"invalid_request_error","param":null,"code":400\}\}\n$
--- error_log
llmd: rejected request body
--- no_error_log
llmd get peer



=== TEST 2: also behind keepalive, which wraps the balancer
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        keepalive 4;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://llm;
    }
--- request
POST /v1/chat/completions
{"messages": [
--- error_code: 400
--- response_body_like: ^\{"error":\{"message":"invalid JSON in request body: [^"]+","type":"invalid_request_error"
--- no_error_log
llmd get peer



=== TEST 3: messages of the wrong type -> 400 naming the field
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request eval
["POST /v1/chat/completions\n{\"messages\":\"hello\"}",
 "POST /v1/chat/completions\n{\"messages\":[{\"role\":\"user\",\"content\":42}]}",
 "POST /v1/completions\n{\"prompt\":{\"text\":\"x\"}}",
 "POST /v1/completions\n[1,2,3]",
 "POST /v1/completions\n{\"prompt\":\"a\",\"max_tokens\":\"ten\"}"]
--- error_code eval
[400, 400, 400, 400, 400]
--- response_body_like eval
[qr/"message":"'messages' must be an array","type":"invalid_request_error","param":"messages"/,
 qr/"message":"a message's 'content' must be a string or an array of content parts".*"param":"messages"/,
 qr/"param":"prompt"/,
 qr/"message":"the request body must be a JSON object"/,
 qr/"param":"max_tokens"/]
--- no_error_log
llmd get peer



=== TEST 4: body over client_max_body_size -> 413 with an OpenAI error body
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ {
        client_max_body_size 1k;
        proxy_pass http://llm;
    }
--- request eval
$main::big
--- error_code: 413
--- response_headers
Content-Type: application/json
--- response_body_like: ^\{"error":\{"message":"request body is larger than the limit of 1024 bytes","type":"invalid_request_error","param":null,"code":413\}\}\n$



=== TEST 5: a chunked body over the limit -> 413 too
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; location / { return 200 "REACHED\n"; } }
--- config
    location /v1/ {
        client_max_body_size 1k;
        proxy_pass http://llm;
    }
--- request eval
$main::chunked_big
--- more_headers
Transfer-Encoding: chunked
--- error_code: 413
--- response_body_like: "code":413



=== TEST 6: no live backend -> 502 with an OpenAI error body
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- config
    location /v1/ { proxy_pass http://llm; }
--- request
POST /v1/completions
{"prompt":"hello"}
--- error_code: 502
--- response_body_like: ^\{"error":\{"message":"no inference worker could take the request","type":"server_error","param":null,"code":502\}\}\n$



=== TEST 7: locations that do not route to llmd keep nginx's pages
--- http_config
    upstream plain {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- config
    location /other/ { proxy_pass http://plain; }
--- request
POST /other/x
{"prompt":
--- error_code: 502
--- response_headers
Content-Type: text/html
--- response_body_like: <html>



=== TEST 8: llmd_json_errors off keeps nginx's pages in an llmd location
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- config
    location /v1/ {
        llmd_json_errors off;
        proxy_pass http://llm;
    }
--- request
POST /v1/completions
{"prompt":"x"
--- error_code: 400
--- response_body_like: <html>



=== TEST 9: a page chosen with error_page is sent as configured, even from an llmd location
--- http_config
    upstream llm {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { default_type text/html; return 200 "<p>our own page</p>\n"; }
    }
    upstream pages {
        llmd;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- config
    location /v1/ {
        error_page 502 /pages/down.html;
        proxy_pass http://llm;
    }
    location /pages/ { proxy_pass http://pages; }
--- request
POST /v1/completions
{"prompt":"x"}
--- error_code: 502
--- response_headers
Content-Type: text/html
--- response_body
<p>our own page</p>
