package io.nbdtail.api;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;
import java.util.concurrent.ConcurrentHashMap;

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
    private final ConcurrentHashMap<String, Object> inProgress = new ConcurrentHashMap<>();

    IdempotencyStore(final Path dataDir, final ObjectMapper json) throws IOException {
        this.dir = dataDir.resolve("idempotency");
        this.json = json;
        Files.createDirectories(dir);
    }

    /** A lock per key, so two concurrent retries do not both act. */
    Object lock(final String key) {
        return inProgress.computeIfAbsent(key, k -> new Object());
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

    void store(final String key, final Entry entry) {
        final Path file = dir.resolve(hash(key) + ".json");
        final Path temp = dir.resolve(hash(key) + ".tmp");
        try {
            Files.write(temp, json.writeValueAsBytes(entry));
            Files.move(temp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
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
