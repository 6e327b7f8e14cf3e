// probe: a tiny static tool for checking the local cluster from inside a pod, with no shell or
// libc in the image. Standard library only; built with CGO_ENABLED=0 so name resolution uses
// Go's own resolver, which reads the pod's /etc/resolv.conf exactly as a libc would.
//
//	probe serve [ADDR]        HTTP server (default :8080): "/" answers "<hostname> <path>"
//	probe get URL             GET URL, print the body; non-zero exit on error or non-2xx
//	probe lookup NAME         resolve NAME, print one address per line
//	probe tcp HOST:PORT       open a TCP connection, print "ok"
//	probe write FILE TEXT     write TEXT to FILE (creating parent directories)
//	probe cat FILE            print FILE
//	probe sleep               sleep until SIGTERM/SIGINT
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "probe: "+format+"\n", a...)
	os.Exit(1)
}

func need(n int) {
	if len(os.Args) < n+2 {
		die("usage: probe serve [ADDR] | get URL | lookup NAME | tcp HOST:PORT | write FILE TEXT | cat FILE | sleep")
	}
}

func waitForSignal() os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	return <-ch
}

func main() {
	need(0)
	timeout := 10 * time.Second
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s\n", host, r.URL.Path)
		})
		srv := &http.Server{Addr: addr, ReadHeaderTimeout: timeout}
		go func() {
			sig := waitForSignal()
			fmt.Fprintf(os.Stderr, "probe: %v, shutting down\n", sig)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}()
		fmt.Fprintf(os.Stderr, "probe: serving on %s\n", addr)
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			die("%v", err)
		}
	case "get":
		need(1)
		client := &http.Client{Timeout: timeout}
		resp, err := client.Get(os.Args[2])
		if err != nil {
			die("%v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(os.Stdout, resp.Body)
		if resp.StatusCode/100 != 2 {
			die("HTTP %s", resp.Status)
		}
	case "lookup":
		need(1)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, os.Args[2])
		if err != nil {
			die("%v", err)
		}
		for _, a := range addrs {
			fmt.Println(a)
		}
	case "tcp":
		need(1)
		c, err := net.DialTimeout("tcp", os.Args[2], timeout)
		if err != nil {
			die("%v", err)
		}
		c.Close()
		fmt.Println("ok")
	case "write":
		need(2)
		if err := os.MkdirAll(filepath.Dir(os.Args[2]), 0o755); err != nil {
			die("%v", err)
		}
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]+"\n"), 0o644); err != nil {
			die("%v", err)
		}
	case "cat":
		need(1)
		b, err := os.ReadFile(os.Args[2])
		if err != nil {
			die("%v", err)
		}
		os.Stdout.Write(b)
	case "sleep":
		waitForSignal()
	default:
		need(1 << 20)
	}
}
