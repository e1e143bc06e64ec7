vcl 4.1;

# Varnish as the CDN stand-in (CloudFront, Akamai...) in front of the nginx balancer.
# Renditions are cached for as long as tofu's Cache-Control allows (max-age, a year by
# default, "immutable"); errors follow Varnish's builtin rules: 404 as briefly as tofu says,
# 5xx never. tests/test_deploy.py compiles this file with varnishd -C and tests/test_cluster.py
# runs it, the backend host replaced by 127.0.0.1.

import std;

# /readyz through the balancer: 200 while at least one tofu node is ready (nginx moves on
# from a node's 503 to the next one), so the backend turns sick only when none is.
probe balancer_ready {
    .request =
        "GET /readyz HTTP/1.1"
        "Host: tofu"
        "User-Agent: varnish-probe"
        "Connection: close";
    .expected_response = 200;
    .interval = 5s;
    .timeout = 3s;
    .window = 5;
    .threshold = 3;
    .initial = 3;
}

backend balancer {
    .host = "nginx";
    .port = "8080";
    .connect_timeout = 2s;
    # Longer than nginx's proxy_read_timeout (35 s) and tofu's --request-timeout (30 s).
    .first_byte_timeout = 40s;
    .between_bytes_timeout = 10s;
    .max_connections = 500;
    .probe = balancer_ready;
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405, "Method Not Allowed"));
    }
    # Health and metrics describe one node at one moment: never cached.
    if (req.url ~ "^/(healthz|readyz|metrics)([?#]|$)") {
        return (pass);
    }
    # tofu ignores query strings, cookies and credentials: drop them so that they neither
    # split the cache nor make requests uncacheable.
    set req.url = regsub(req.url, "[?#].*$", "");
    unset req.http.Cookie;
    unset req.http.Authorization;
    # tofu picks AVIF or WebP for URLs that name no format from the explicit mentions of
    # image/avif and image/webp in Accept (and says Vary: Accept). Reduce the header to just
    # those, so one URL has at most four variants here instead of one per browser version.
    if (req.http.Accept ~ "(?i)image/avif" && req.http.Accept ~ "(?i)image/webp") {
        set req.http.Accept = "image/avif,image/webp";
    } elsif (req.http.Accept ~ "(?i)image/avif") {
        set req.http.Accept = "image/avif";
    } elsif (req.http.Accept ~ "(?i)image/webp") {
        set req.http.Accept = "image/webp";
    } else {
        unset req.http.Accept;
    }
    # While the balancer is healthy, refresh expired objects promptly; when it is sick, serve
    # what is cached for up to the full grace period.
    if (std.healthy(req.backend_hint)) {
        set req.grace = 10s;
    }
    return (hash);
}

sub vcl_backend_response {
    # A failed background refresh must not replace the stale copy still being served.
    if (beresp.status >= 500 && bereq.is_bgfetch) {
        return (abandon);
    }
    if (beresp.status == 200) {
        # beresp.ttl already comes from Cache-Control (s-maxage, max-age) or Expires; the
        # builtin code that runs after this makes no-store/private answers uncacheable.
        set beresp.grace = 6h;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
