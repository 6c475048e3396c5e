package io.nbdtail.api;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;

/**
 * Remembers the first response to a request sent with an {@code Idempotency-Key} header, on disc, for 24 hours,
 * so a retried create or start returns that response instead of acting twice, even across a server restart.
 * The same key with a different request is refused: it is a client bug, not a retry.
 */
final class IdempotencyStore {
    private static final Logger LOG = LoggerFactory.getLogger(IdempotencyStore.class);
    static final Duration TTL = Duration.ofHours(24);
    static final int MAX_KEY_LENGTH = 128;

    /** What was answered the first time. */
    record Entry(String method, String path, String requestHash, int status, String body, Instant created) {
    }

    private final Path dir;
    private final ObjectMapper json;
    /** Striped locks: a retry waits for the first request with its key; the set never grows. */
    private final Object[] locks = new Object[64];

    IdempotencyStore(final Path dataDir, final ObjectMapper json) throws IOException {
        this.dir = dataDir.resolve("idempotency");
        this.json = json;
        for (int i = 0; i < locks.length; i++) {
            locks[i] = new Object();
        }
        Files.createDirectories(dir);
    }

    /** The lock for a key, so two concurrent retries do not both act. */
    Object lock(final String key) {
        return locks[Math.floorMod(key.hashCode(), locks.length)];
    }

    Entry find(final String key) {
        final Path file = dir.resolve(hash(key) + ".json");
        if (!Files.exists(file)) {
            return null;
        }
        try {
            final Entry entry = json.readValue(Files.readAllBytes(file), Entry.class);
            if (entry.created().plus(TTL).isBefore(Instant.now())) {
                Files.deleteIfExists(file);
                return null;
            }
            return entry;
        } catch (final IOException e) {
            LOG.warn("ignoring unreadable idempotency record {}: {}", file, e.toString());
            return null;
        }
    }

    /**
     * Records the first answer durably (file fsync, rename, directory fsync) before it is sent, so a retry after
     * a crash finds it and does not act twice.
     */
    void store(final String key, final Entry entry) {
        final Path file = dir.resolve(hash(key) + ".json");
        final Path temp = dir.resolve(hash(key) + ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(temp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
                final ByteBuffer bytes = ByteBuffer.wrap(json.writeValueAsBytes(entry));
                while (bytes.hasRemaining()) {
                    ch.write(bytes);
                }
                ch.force(true);
            }
            Files.move(temp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
                d.force(true);
            }
        } catch (final IOException e) {
            LOG.warn("cannot record idempotency key: {}", e.toString());
        }
    }

    static String hash(final String text) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256")
                .digest(text.getBytes(StandardCharsets.UTF_8)));
        } catch (final NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
