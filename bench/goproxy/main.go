// Go's net/http/httputil.ReverseProxy as a plain reverse proxy, the core of llama-swap: bench/proxy.sh
// measures it beside gpuvisor's /upstream/ proxy and nginx. Standard library only.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	upstream := flag.String("upstream", "", "URL of the service to proxy, e.g. http://127.0.0.1:9000")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil || target.Scheme == "" || target.Host == "" {
		log.Fatalf("goproxy: -upstream must be a URL such as http://127.0.0.1:9000 (got %q)", *upstream)
	}

	proxy := httputil.NewSingleHostReverseProxy(target)
	// http.DefaultTransport's settings, with enough idle connections per host that upstream
	// keep-alive holds under 64 client connections (nginx's config: keepalive 128). The default
	// FlushInterval is kept: llama-swap streams, but GET / here is a small response of known length.
	proxy.Transport = &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
	// Nothing is printed per request; a failed upstream request is logged (to stderr) and answered 502.
	log.Fatal(http.ListenAndServe(*listen, proxy))
}
