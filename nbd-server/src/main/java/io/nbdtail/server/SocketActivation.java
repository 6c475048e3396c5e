package io.nbdtail.server;

/**
 * systemd socket activation ({@code sd_listen_fds(3)}): when {@code LISTEN_PID} is this process and
 * {@code LISTEN_FDS} is at least 1, the listening socket is file descriptor 3. libnbd's
 * {@code nbdinfo -- [ CMD ]} uses the same protocol with a Unix-domain socket.
 */
public final class SocketActivation {
    /** The first inherited descriptor, by the protocol's definition. */
    public static final int LISTEN_FDS_START = 3;

    private SocketActivation() {
    }

    /** The inherited listening descriptor, or {@code null} if this process was not socket-activated. */
    public static Integer listenFd() {
        final String pid = System.getenv("LISTEN_PID");
        final String fds = System.getenv("LISTEN_FDS");
        if (pid == null || fds == null) {
            return null;
        }
        try {
            if (Long.parseLong(pid.trim()) != ProcessHandle.current().pid() || Integer.parseInt(fds.trim()) < 1) {
                return null;
            }
        } catch (final NumberFormatException e) {
            return null;
        }
        return LISTEN_FDS_START;
    }
}
