// A bare validating webhook for bench/apiserver.py: decode the AdmissionReview, answer
// allowed. It is the floor under any webhook -- what the API server pays to call one at all --
// with HTTP/2 offered over ALPN (as Go servers do by default) or, with -http1, HTTP/1.1 only
// (what an aiohttp server such as changegate's offers). Standard library only.
//
//	go run bench/barewebhook.go -cert tls.crt -key tls.key -port-file port [-http1]
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
)

type review struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID string `json:"uid"`
	} `json:"request,omitempty"`
	Response *response `json:"response,omitempty"`
}

type response struct {
	UID     string `json:"uid"`
	Allowed bool   `json:"allowed"`
}

func main() {
	cert := flag.String("cert", "", "serving certificate (PEM)")
	key := flag.String("key", "", "its private key (PEM)")
	portFile := flag.String("port-file", "", "where to write the port listened on")
	http1 := flag.Bool("http1", false, "offer HTTP/1.1 only (no h2 over ALPN)")
	flag.Parse()

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/validate", func(w http.ResponseWriter, r *http.Request) {
		var in review
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Request == nil {
			http.Error(w, "malformed AdmissionReview", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review{
			APIVersion: "admission.k8s.io/v1",
			Kind:       "AdmissionReview",
			Response:   &response{UID: in.Request.UID, Allowed: true},
		})
	})
	server := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}}
	if *http1 {
		// A non-nil, empty map turns off the server's automatic HTTP/2.
		server.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	} else {
		server.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	if err := os.WriteFile(*portFile, []byte(strconv.Itoa(port)), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Fatal(server.ServeTLS(listener, "", ""))
}
