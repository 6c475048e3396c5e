package io.nbdtail.nbd.tls;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Pre-shared keys in the format GnuTLS's {@code psktool}, qemu ({@code tls-creds-psk}, file {@code keys.psk}) and
 * nbdkit ({@code --tls-psk}) read: one {@code identity:hexkey} per line.
 */
final class PskKeys {
    private final Map<String, byte[]> keys;

    private PskKeys(final Map<String, byte[]> keys) {
        this.keys = keys;
    }

    static PskKeys load(final Path file) throws IOException {
        return load(file, "nbd.tls.pskFile");
    }

    /** @param setting the configuration key naming the file, for messages. */
    static PskKeys load(final Path file, final String setting) throws IOException {
        final List<String> lines;
        try {
            lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        } catch (final IOException e) {
            throw new IOException(setting + ": cannot read " + file + ": " + e.getMessage(), e);
        }
        final Map<String, byte[]> keys = new TreeMap<>();
        int n = 0;
        for (final String raw : lines) {
            n++;
            final String line = raw.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            final int colon = line.lastIndexOf(':');
            final byte[] key;
            try {
                key = colon > 0 ? HexFormat.of().parseHex(line.substring(colon + 1)) : null;
            } catch (final IllegalArgumentException e) {
                throw bad(file, n, setting);
            }
            if (key == null || key.length < 16) {
                throw bad(file, n, setting);
            }
            keys.put(line.substring(0, colon), key);
        }
        if (keys.isEmpty()) {
            throw new IllegalArgumentException(setting + " " + file + " has no keys; create one with"
                + " 'psktool -u IDENTITY -p " + file + "'");
        }
        return new PskKeys(Map.copyOf(keys));
    }

    private static IllegalArgumentException bad(final Path file, final int line, final String setting) {
        return new IllegalArgumentException(setting + " " + file + " line " + line + ": expected identity:hexkey"
            + " with a key of at least 16 bytes (32 hex digits), as 'psktool -u IDENTITY -p FILE' writes");
    }

    /** The identities in the file, sorted. */
    List<String> identities() {
        return List.copyOf(new java.util.TreeSet<>(keys.keySet()));
    }

    /** The key of {@code identity}, or {@code null}. */
    byte[] key(final String identity) {
        final byte[] k = keys.get(identity);
        return k == null ? null : k.clone();
    }
}
