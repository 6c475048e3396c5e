package io.nbdtail.nbd.access;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The client networks allowed to open a volume: CIDR blocks, IPv4 or IPv6. Addresses are compared as bytes
 * under a prefix mask, never as strings (nbd-server's CVE-2013-6410 was a string-matching ACL). An IPv4 client
 * reaching an IPv6 socket as {@code ::ffff:a.b.c.d} is matched as IPv4.
 *
 * <p>Clients on a Unix-domain socket have no network address: they are local, already trusted by the socket's
 * file permissions, and always allowed.
 */
public final class AccessList {
    private final List<Network> networks;
    private final List<String> text;

    private AccessList(final List<Network> networks, final List<String> text) {
        this.networks = networks;
        this.text = text;
    }

    /**
     * Parses {@code 10.0.0.0/8}, {@code 192.0.2.7} (one host), {@code fd00::/8}, {@code ::1}.
     *
     * @throws IllegalArgumentException naming the entry that is not a network.
     */
    public static AccessList parse(final List<String> entries) {
        final List<Network> networks = new ArrayList<>();
        final List<String> text = new ArrayList<>();
        for (final String entry : entries) {
            final Network n = Network.parse(entry);
            networks.add(n);
            text.add(n.toString());
        }
        return new AccessList(List.copyOf(networks), Collections.unmodifiableList(text));
    }

    /** The entries in canonical form ({@code 10.0.0.0/8}). */
    public List<String> entries() {
        return text;
    }

    public boolean allows(final SocketAddress client) {
        if (!(client instanceof InetSocketAddress inet)) {
            return true;
        }
        final InetAddress address = inet.getAddress();
        if (address == null) {
            return false;
        }
        final byte[] bytes = normalise(address.getAddress());
        for (final Network n : networks) {
            if (n.contains(bytes)) {
                return true;
            }
        }
        return false;
    }

    /** IPv4-mapped IPv6 addresses become IPv4. */
    static byte[] normalise(final byte[] a) {
        if (a.length == 16) {
            boolean mapped = a[10] == (byte) 0xff && a[11] == (byte) 0xff;
            for (int i = 0; i < 10 && mapped; i++) {
                mapped = a[i] == 0;
            }
            if (mapped) {
                return new byte[] {a[12], a[13], a[14], a[15]};
            }
        }
        return a;
    }

    /** One CIDR block. */
    record Network(byte[] address, int prefix) {
        static Network parse(final String entry) {
            final String s = entry == null ? "" : entry.trim();
            final int slash = s.indexOf('/');
            final String host = slash < 0 ? s : s.substring(0, slash);
            if (host.isEmpty() || !(host.indexOf(':') >= 0 || host.matches("[0-9.]+"))) {
                throw invalid(entry);
            }
            final byte[] bytes;
            try {
                // A literal only: getByName does no DNS lookup for a numeric address.
                bytes = normalise(InetAddress.getByName(host).getAddress());
            } catch (final UnknownHostException | SecurityException e) {
                throw invalid(entry);
            }
            final int max = bytes.length * 8;
            int prefix = max;
            if (slash >= 0) {
                try {
                    prefix = Integer.parseInt(s.substring(slash + 1));
                } catch (final NumberFormatException e) {
                    throw invalid(entry);
                }
                if (prefix < 0 || prefix > max) {
                    throw new IllegalArgumentException("invalid network '" + entry + "': prefix length must be 0.."
                        + max);
                }
            }
            // Canonical form: host bits cleared.
            for (int bit = prefix; bit < max; bit++) {
                bytes[bit / 8] &= (byte) ~(0x80 >>> (bit % 8));
            }
            return new Network(bytes, prefix);
        }

        private static IllegalArgumentException invalid(final String entry) {
            return new IllegalArgumentException("invalid network '" + entry + "': use an address or CIDR block such"
                + " as 10.1.0.0/16, 192.0.2.7 or fd00::/8");
        }

        boolean contains(final byte[] candidate) {
            if (candidate.length != address.length) {
                return false;
            }
            final int whole = prefix / 8;
            for (int i = 0; i < whole; i++) {
                if (candidate[i] != address[i]) {
                    return false;
                }
            }
            final int rest = prefix % 8;
            if (rest == 0) {
                return true;
            }
            final int mask = 0xff << (8 - rest) & 0xff;
            return (candidate[whole] & mask) == (address[whole] & mask);
        }

        @Override
        public String toString() {
            try {
                return InetAddress.getByAddress(address).getHostAddress() + "/" + prefix;
            } catch (final UnknownHostException e) {
                throw new IllegalStateException(e);
            }
        }
    }
}
