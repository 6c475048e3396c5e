package io.nbdtail.api;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.Set;

/** The API's bearer token: read from a file, which is created (mode 0600, 256 random bits) if missing. */
public final class TokenFile {
    private TokenFile() {
    }

    public static String loadOrCreate(final Path file) throws IOException {
        if (!Files.exists(file)) {
            final byte[] random = new byte[32];
            new SecureRandom().nextBytes(random);
            final String token = HexFormat.of().formatHex(random);
            final Path dir = file.toAbsolutePath().getParent();
            Files.createDirectories(dir);
            // Written whole and synced under another name, then linked into place: a crash (kill -9 right after
            // start-up) leaves either no token file or a complete one, never an empty one that the next start
            // would refuse. Created with 0600 from the start: never readable by others, not even for a moment.
            final Path temp = dir.resolve(file.getFileName() + ".new");
            Files.deleteIfExists(temp);
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(temp, Set.of(
                java.nio.file.StandardOpenOption.CREATE_NEW, java.nio.file.StandardOpenOption.WRITE),
                PosixFilePermissions.asFileAttribute(Set.of(PosixFilePermission.OWNER_READ,
                    PosixFilePermission.OWNER_WRITE)))) {
                ch.write(java.nio.ByteBuffer.wrap((token + "\n").getBytes(StandardCharsets.UTF_8)));
                ch.force(true);
            }
            try {
                Files.createLink(file, temp);
            } catch (final FileAlreadyExistsException raced) {
                // Another process created it first; read theirs.
            } finally {
                Files.deleteIfExists(temp);
            }
            try (java.nio.channels.FileChannel d = java.nio.channels.FileChannel.open(dir,
                java.nio.file.StandardOpenOption.READ)) {
                d.force(true);
            }
        }
        final String token = Files.readString(file, StandardCharsets.UTF_8).trim();
        if (token.length() < 16) {
            throw new IOException("API token in " + file + " is shorter than 16 characters; put a long random token"
                + " in it or delete it to have one generated");
        }
        return token;
    }
}
