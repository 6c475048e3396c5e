package io.nbdtail.api;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Runs long operations in the background and keeps their state in {@code DATA/operations/}, so that an
 * operation is never lost silently: after a restart, one that was running is reported as failed, with the
 * reason, and the client can start it again.
 */
public final class OperationManager {
    private static final Logger LOG = LoggerFactory.getLogger(OperationManager.class);
    /** Finished operations kept for inspection. */
    private static final int HISTORY = 200;
    private static final long PERSIST_INTERVAL_MILLIS = 1000;

    /** The work of an operation. Throws to fail it; checks {@link Operation#cancelRequested()} to stop early. */
    @FunctionalInterface
    public interface Task {
        void run(Operation operation, Progress progress) throws Exception;
    }

    /** Lets a task report bytes done; persists at most once a second. */
    public final class Progress {
        private final Operation operation;
        private long lastPersist = System.currentTimeMillis();

        Progress(final Operation operation) {
            this.operation = operation;
        }

        public void add(final long bytes) {
            operation.bytesDone += bytes;
            final long now = System.currentTimeMillis();
            if (now - lastPersist >= PERSIST_INTERVAL_MILLIS) {
                lastPersist = now;
                persist(operation);
            }
        }
    }

    private final Path dir;
    private final ObjectMapper json;
    private final ConcurrentHashMap<String, Operation> operations = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<String, Thread> workers = new ConcurrentHashMap<>();
    private volatile boolean shuttingDown;

    public OperationManager(final Path dataDir, final ObjectMapper json) throws IOException {
        this.dir = dataDir.resolve("operations");
        this.json = json;
        Files.createDirectories(dir);
        load();
    }

    private void load() {
        try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "*.json")) {
            for (final Path file : files) {
                try {
                    final Operation op = json.readValue(Files.readAllBytes(file), Operation.class);
                    if (op.state == Operation.State.RUNNING) {
                        op.state = Operation.State.FAILED;
                        op.error = "interrupted by a server restart; start it again";
                        op.finished = Instant.now();
                        persist(op);
                        LOG.warn("operation {} ({} of {}) was interrupted by a restart; marked failed", op.id, op.kind,
                            op.volume);
                    }
                    operations.put(op.id, op);
                } catch (final IOException | RuntimeException e) {
                    LOG.warn("skipping unreadable operation record {}: {}", file, e.toString());
                }
            }
        } catch (final IOException e) {
            LOG.warn("cannot read {}: {}", dir, e.toString());
        }
    }

    /**
     * Starts {@code task} unless an operation of the same kind runs on the same volume; checking and starting
     * are one step, so two concurrent calls cannot both start.
     *
     * @return the new operation, or {@code null} if one was already running.
     */
    public synchronized Operation startExclusive(final String kind, final String volume, final long bytesTotal,
                                                 final Task task) {
        return running(kind, volume) ? null : start(kind, volume, bytesTotal, task);
    }

    /** Starts {@code task} in the background and returns its operation at once. */
    public Operation start(final String kind, final String volume, final long bytesTotal, final Task task) {
        final Operation op = new Operation();
        op.id = UUID.randomUUID().toString();
        op.kind = kind;
        op.volume = volume;
        op.bytesTotal = bytesTotal;
        op.started = Instant.now();
        operations.put(op.id, op);
        persist(op);
        workers.put(op.id, Thread.ofVirtual().name("op-" + kind + "-" + volume).unstarted(() -> run(op, task)));
        workers.get(op.id).start();
        return op;
    }

    private void run(final Operation op, final Task task) {
        try {
            task.run(op, new Progress(op));
            op.state = op.cancelRequested ? Operation.State.CANCELLED : Operation.State.SUCCEEDED;
        } catch (final Exception e) {
            op.error = e.getMessage() != null ? e.getMessage() : e.toString();
            op.state = op.cancelRequested ? Operation.State.CANCELLED : Operation.State.FAILED;
        }
        if (shuttingDown && op.state == Operation.State.CANCELLED) {
            op.state = Operation.State.FAILED;
            op.error = "interrupted by a server shutdown; start it again";
        }
        workers.remove(op.id);
        op.finished = Instant.now();
        persist(op);
        LOG.info("operation {} ({} of {}) {}{}", op.id, op.kind, op.volume, op.state.name().toLowerCase(),
            op.error != null ? ": " + op.error : "");
        prune();
    }

    public Operation get(final String id) {
        return operations.get(id);
    }

    /** Newest first. */
    public List<Operation> list() {
        final List<Operation> list = new ArrayList<>(operations.values());
        list.sort(Comparator.comparing((Operation o) -> o.started).reversed());
        return list;
    }

    /** Asks a running operation to stop; it reports {@code cancelled} once it has. */
    public Operation cancel(final String id) {
        final Operation op = operations.get(id);
        if (op != null && op.state == Operation.State.RUNNING) {
            op.cancelRequested = true;
        }
        return op;
    }

    /**
     * Stops every running operation before the server stops; they are recorded as failed ("interrupted by a
     * server shutdown"), never left looking as if they were still running.
     */
    public void shutdown(final long timeoutMillis) throws InterruptedException {
        shuttingDown = true;
        for (final Operation op : operations.values()) {
            if (op.state == Operation.State.RUNNING) {
                op.cancelRequested = true;
            }
        }
        final long deadline = System.currentTimeMillis() + timeoutMillis;
        for (final Thread worker : workers.values()) {
            worker.join(Math.max(1, deadline - System.currentTimeMillis()));
        }
    }

    /** Whether an operation of {@code kind} is running on {@code volume}. */
    public boolean running(final String kind, final String volume) {
        for (final Operation op : operations.values()) {
            if (op.state == Operation.State.RUNNING && op.kind.equals(kind) && op.volume.equals(volume)) {
                return true;
            }
        }
        return false;
    }

    private synchronized void persist(final Operation op) {
        final Path file = dir.resolve(op.id + ".json");
        final Path temp = dir.resolve(op.id + ".json.tmp");
        try {
            Files.write(temp, json.writeValueAsBytes(op));
            Files.move(temp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (final IOException e) {
            LOG.warn("cannot record operation {}: {}", op.id, e.toString());
        }
    }

    private void prune() {
        final List<Operation> finished = new ArrayList<>();
        for (final Operation op : operations.values()) {
            if (op.state != Operation.State.RUNNING) {
                finished.add(op);
            }
        }
        if (finished.size() <= HISTORY) {
            return;
        }
        finished.sort(Comparator.comparing((Operation o) -> o.finished));
        for (int i = 0; i < finished.size() - HISTORY; i++) {
            final Operation old = finished.get(i);
            operations.remove(old.id);
            try {
                Files.deleteIfExists(dir.resolve(old.id + ".json"));
            } catch (final IOException e) {
                LOG.debug("cannot delete {}: {}", old.id, e.toString());
            }
        }
    }
}
