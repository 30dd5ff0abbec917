// Package pki provides the fleet's certificate authority: creating the CA, the server
// certificate and the admin token (fleet init), and signing device certificates from CSRs.
package pki
