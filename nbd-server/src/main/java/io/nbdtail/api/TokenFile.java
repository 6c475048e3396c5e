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
            Files.createDirectories(file.toAbsolutePath().getParent());
            try {
                // Created with 0600 from the start: never readable by others, not even for a moment.
                Files.createFile(file, PosixFilePermissions.asFileAttribute(Set.of(PosixFilePermission.OWNER_READ,
                    PosixFilePermission.OWNER_WRITE)));
                Files.writeString(file, token + "\n", StandardCharsets.UTF_8);
            } catch (final FileAlreadyExistsException raced) {
                // Another process created it first; read theirs.
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
