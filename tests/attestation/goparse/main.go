// Parses a DER certificate with Go's crypto/x509, as every Go TLS client (the kubelet's prober
// among them) does during the handshake, and prints the OIDs of its extensions.
package main

import (
	"crypto/x509"
	"fmt"
	"os"
)

func main() {
	der, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, ext := range cert.Extensions {
		fmt.Println(ext.Id.String())
	}
}
