// A CoreDNS binary with only the plugins the cluster's DNS needs.
//
// CoreDNS's own main (github.com/coredns/coredns/coredns.go) imports every plugin through
// core/plugin, which drags in cloud SDKs (AWS, Azure, GCP) and triples the build time. Plugins
// register themselves in init(); the execution order comes from dnsserver.Directives, so
// importing a subset is enough. Built by cluster/addons/build.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"
)

var _ = dnsserver.Directives

func main() {
	coremain.Run()
}
