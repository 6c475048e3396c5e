package io.nbdtail.api;

import io.nbdtail.storage.StorageException;
import io.nbdtail.volume.Volume;

import java.nio.ByteBuffer;

/**
 * Reads a whole volume to find latent read errors before a guest (or a mirror) trips over them. A long
 * operation: reports progress, honours a rate limit and cancellation, and fails naming the first bad offset.
 */
final class Scrubber {
    private static final int CHUNK = 1 << 20;

    private Scrubber() {
    }

    static void scrub(final Volume volume, final long bytesPerSecond, final Operation operation,
                      final OperationManager.Progress progress) throws Exception {
        final ByteBuffer buffer = ByteBuffer.allocateDirect(CHUNK);
        final long size = volume.size();
        final long start = System.nanoTime();
        long errors = 0;
        long firstError = -1;
        String firstMessage = null;
        for (long offset = 0; offset < size && !operation.cancelRequested(); offset += CHUNK) {
            final int n = (int) Math.min(CHUNK, size - offset);
            buffer.clear().limit(n);
            try {
                volume.read(buffer, offset);
            } catch (final StorageException e) {
                if (errors++ == 0) {
                    firstError = offset;
                    firstMessage = e.getMessage();
                }
            }
            progress.add(n);
            if (bytesPerSecond > 0) {
                // Sleep until the average rate is back under the limit.
                final long due = (long) ((double) operation.bytesDone * 1_000_000_000L / bytesPerSecond);
                final long ahead = due - (System.nanoTime() - start);
                if (ahead > 0) {
                    Thread.sleep(ahead / 1_000_000, (int) (ahead % 1_000_000));
                }
            }
        }
        if (errors > 0) {
            throw new StorageException(StorageException.Kind.IO_ERROR, errors + " MiB chunk(s) could not be read; the"
                + " first at offset " + firstError + ": " + firstMessage);
        }
    }
}
