package io.nbdtail.nbd.tls;

import javax.security.auth.x500.X500Principal;

/**
 * Who a TLS client proved to be: the subject of its verified certificate, or the PSK identity whose key it holds.
 * Certificate subjects compare as X.500 names ({@link X500Principal#equals} uses the canonical form), so spacing
 * and case in attribute values written in the configuration do not matter.
 */
public sealed interface ClientIdentity {
    /** A client that proved a certificate with this subject. */
    record Certificate(X500Principal subject) implements ClientIdentity {
        @Override
        public String toString() {
            return "dn:" + subject.getName(X500Principal.RFC2253);
        }
    }

    /** A client that proved it holds the key of this PSK identity. */
    record Psk(String identity) implements ClientIdentity {
        @Override
        public String toString() {
            return "psk:" + identity;
        }
    }

    /**
     * Parses a configuration entry: {@code dn:CN=a,O=b} or {@code psk:name}.
     *
     * @throws IllegalArgumentException naming the entry and the accepted forms.
     */
    static ClientIdentity parse(final String entry) {
        if (entry != null && entry.startsWith("dn:")) {
            try {
                return new Certificate(new X500Principal(entry.substring(3)));
            } catch (final IllegalArgumentException e) {
                throw new IllegalArgumentException("invalid certificate subject in '" + entry + "': " + e.getMessage()
                    + "; write it as RFC 2253, e.g. dn:CN=host-4.example.net,O=Tenant A");
            }
        }
        if (entry != null && entry.startsWith("psk:") && entry.length() > 4) {
            return new Psk(entry.substring(4));
        }
        throw new IllegalArgumentException("invalid client identity '" + entry + "': use dn:SUBJECT for a"
            + " certificate (dn:CN=host-4,O=Tenant A) or psk:IDENTITY for a pre-shared key");
    }
}
