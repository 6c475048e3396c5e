package io.nbdtail.nbd.transport;

import io.nbdtail.nbd.codec.PayloadRecvByteBufAllocator;
import io.nbdtail.nbd.engine.ExportRegistry;
import io.nbdtail.nbd.engine.NbdHandshakeHandler;
import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.nbd.engine.NbdServerContext;
import io.nbdtail.nbd.engine.NbdTransmissionHandler;
import io.nbdtail.nbd.tls.NbdTls;
import io.nbdtail.storage.StorageExecutor;
import io.nbdtail.storage.nativeio.NativeIo;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.PooledByteBufAllocator;
import io.netty.channel.AdaptiveRecvByteBufAllocator;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.ServerChannel;
import io.netty.channel.WriteBufferWaterMark;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.util.concurrent.FastThreadLocalThread;
import io.netty.util.internal.SystemPropertyUtil;
import io.netty.util.concurrent.GlobalEventExecutor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The NBD listener: accepts connections on TCP addresses or on sockets inherited from systemd, and gives each
 * connection a pipeline of {@code limiter -> handshake} (the handshake later replaces itself with
 * {@code decoder -> transmission}).
 *
 * <p>Uses the epoll transport when available (always on Linux here) and NIO otherwise; inherited sockets need
 * epoll.
 */
public final class NbdServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(NbdServer.class);
    /** 2^11 pages of 8 KiB: 16 MiB chunks, unless {@code -Dio.netty.allocator.maxOrder} says otherwise. */
    private static final int MAX_ORDER = 11;
    /**
     * Netty's pooled allocator with 16 MiB chunks instead of 4 MiB. WRITE payloads and READ replies are up to
     * {@code maxPayload} each; at 1 MiB one takes a quarter of a 4 MiB chunk, so chunks fill and empty with every
     * few requests, and the arena frees an empty chunk and maps a new one soon after (kilobytes of bookkeeping
     * objects and a fresh mapping to fault in each time: {@code LargeWriteDecodeBenchmark} with
     * {@code holdPrevious=true}, 130 -> 73 us and 2.7 KB -> 0 B per 1 MiB WRITE). The larger chunk keeps the
     * requests in flight in one chunk that stays.
     */
    public static final PooledByteBufAllocator ALLOCATOR = new PooledByteBufAllocator(true,
        PooledByteBufAllocator.defaultNumHeapArena(), PooledByteBufAllocator.defaultNumDirectArena(),
        PooledByteBufAllocator.defaultPageSize(),
        SystemPropertyUtil.get("io.netty.allocator.maxOrder") != null ? PooledByteBufAllocator.defaultMaxOrder()
            : MAX_ORDER,
        PooledByteBufAllocator.defaultSmallCacheSize(), PooledByteBufAllocator.defaultNormalCacheSize(),
        PooledByteBufAllocator.defaultUseCacheForAllThreads());

    private final NbdServerContext context;
    private final EventLoopGroup bossGroup;
    private final EventLoopGroup workerGroup;
    private final boolean epoll;
    private final ConnectionLimiter limiter;
    private final ChannelGroup connections = new DefaultChannelGroup("nbd-connections",
        GlobalEventExecutor.INSTANCE);
    private final List<Channel> listeners = new CopyOnWriteArrayList<>();

    public NbdServer(final NbdServerConfig config, final ExportRegistry exports, final Executor storageExecutor) {
        try {
            this.context = new NbdServerContext(config, exports, storageExecutor, NbdTls.create(config.tls));
        } catch (final java.io.IOException e) {
            throw new IllegalArgumentException(e.getMessage(), e);
        }
        this.epoll = Epoll.isAvailable();
        this.bossGroup = new MultiThreadIoEventLoopGroup(1,
            epoll ? EpollIoHandler.newFactory() : NioIoHandler.newFactory());
        this.workerGroup = new MultiThreadIoEventLoopGroup(config.eventLoopThreads,
            epoll ? EpollIoHandler.newFactory() : NioIoHandler.newFactory());
        this.limiter = new ConnectionLimiter(config.maxConnections, config.maxConnectionsPerAddress);
        if (!epoll) {
            LOG.warn("epoll transport unavailable ({}); using NIO", Epoll.unavailabilityCause().toString());
        }
    }

    /**
     * The storage threads for this server: {@code nbdtail-io-N}, daemon, and Netty
     * {@code FastThreadLocalThread}s. They allocate READ replies and release WRITE payloads; on a plain thread
     * Netty's {@code Recycler} and the pooled allocator's thread cache miss every time, which cost about 130
     * heap bytes and an arena lock per request.
     */
    public static StorageExecutor storageExecutor(final int threads) {
        final AtomicInteger counter = new AtomicInteger();
        return new StorageExecutor(threads, r -> {
            final Thread t = new FastThreadLocalThread(r, "nbdtail-io-" + counter.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
    }

    public NbdServerContext context() {
        return context;
    }

    /** Connections open now, including those still in the handshake. */
    public int connectionCount() {
        return limiter.connections();
    }

    /** Connections closed at once because a connection cap was reached. */
    public long refusedConnections() {
        return limiter.refused();
    }

    /** Binds a TCP listener; returns the bound address (useful with port 0). */
    public InetSocketAddress bind(final String host, final int port) throws InterruptedException {
        final ServerBootstrap bootstrap = bootstrap(false)
            .channel(epoll ? EpollServerSocketChannel.class : NioServerSocketChannel.class);
        final Channel channel = bootstrap.bind(host, port).sync().channel();
        listeners.add(channel);
        final InetSocketAddress bound = (InetSocketAddress) channel.localAddress();
        LOG.info("listening on {}", bound);
        return bound;
    }

    /**
     * Binds a listener that serves only {@code export} (a volume's own service address): the empty export name
     * and the volume's name both open it, nothing else is visible. With {@code freeBind} the address need not be
     * configured on this host yet (IP_FREEBIND), so the listener can be ready before the address moves here.
     *
     * @return the listener, to close when the volume leaves.
     */
    public Channel bindExport(final String host, final int port, final String export, final boolean freeBind)
        throws InterruptedException {
        final ServerBootstrap bootstrap = bootstrap(false, export)
            .channel(epoll ? EpollServerSocketChannel.class : NioServerSocketChannel.class);
        if (freeBind && epoll) {
            bootstrap.option(io.netty.channel.epoll.EpollChannelOption.IP_FREEBIND, true);
        }
        final Channel channel = bootstrap.bind(host, port).sync().channel();
        listeners.add(channel);
        channel.closeFuture().addListener(f -> listeners.remove(channel));
        LOG.info("listening on {} for volume {}", channel.localAddress(), export);
        return channel;
    }

    /**
     * Serves on a listening socket inherited as file descriptor {@code fd} (systemd socket activation). TCP and
     * Unix-domain sockets both work; {@code nbdinfo -- [ nbdtail serve ... ]} hands over a Unix one.
     */
    public SocketAddress serveInherited(final int fd) throws Exception {
        if (!epoll) {
            throw new IllegalStateException("socket activation needs the epoll transport");
        }
        final boolean unix = NativeIo.get().socketFamily(fd) == NativeIo.AF_UNIX;
        // (fd, true): the one-argument domain-socket constructor marks the channel inactive, and an inactive
        // server channel never starts accepting. The socket is already bound and listening.
        final ServerBootstrap bootstrap = bootstrap(unix).channelFactory(() -> unix
            ? new EpollServerDomainSocketChannel(fd, true) : new EpollServerSocketChannel(fd));
        final Channel channel = bootstrap.register().sync().channel();
        listeners.add(channel);
        LOG.info("serving on inherited socket fd={} ({})", fd, unix ? "unix" : channel.localAddress());
        return channel.localAddress();
    }

    private ServerBootstrap bootstrap(final boolean unix) {
        return bootstrap(unix, null);
    }

    private ServerBootstrap bootstrap(final boolean unix, final String onlyExport) {
        final NbdServerConfig config = context.config();
        final ServerBootstrap b = new ServerBootstrap()
            .group(bossGroup, workerGroup)
            .option(ChannelOption.SO_BACKLOG, 1024)
            .childOption(ChannelOption.ALLOCATOR, ALLOCATOR)
            // Above 8 MiB of unsent replies the connection stops reading requests (see NbdTransmissionHandler).
            .childOption(ChannelOption.WRITE_BUFFER_WATER_MARK, new WriteBufferWaterMark(2 << 20, 8 << 20))
            .childHandler(new ChannelInitializer<>() {
                @Override
                protected void initChannel(final Channel ch) {
                    connections.add(ch);
                    if (onlyExport != null) {
                        ch.attr(NbdHandshakeHandler.ONLY_EXPORT).set(onlyExport);
                    }
                    // Reads grow up to 256 KiB; the rest of a large WRITE payload is read straight into its
                    // buffer (one allocator per channel: it knows that channel's decoder).
                    ch.config().setRecvByteBufAllocator(new PayloadRecvByteBufAllocator(
                        new AdaptiveRecvByteBufAllocator(512, 16 << 10, 256 << 10)));
                    ch.pipeline()
                        .addLast("limiter", limiter)
                        .addLast("nbd-handshake", new NbdHandshakeHandler(context));
                }
            });
        if (!unix) {
            b.option(ChannelOption.SO_REUSEADDR, true);
            // NBD is request/reply with small headers: never wait for Nagle (the spec says SHOULD).
            b.childOption(ChannelOption.TCP_NODELAY, true);
            b.childOption(ChannelOption.SO_KEEPALIVE, true);
        }
        return b;
    }

    /**
     * Graceful shutdown: stops accepting, lets every connection answer the requests it has already read (new
     * ones are not read), closes connections, and waits up to {@code timeoutMillis}. Afterwards no request is
     * in flight, so the caller can sync and close the volumes.
     */
    public void shutdown(final long timeoutMillis) throws InterruptedException {
        context.beginShutdown();
        for (final Channel listener : listeners) {
            listener.close().sync();
        }
        final List<Channel> open = new ArrayList<>(connections);
        for (final Channel ch : open) {
            ch.eventLoop().execute(() -> {
                final NbdTransmissionHandler handler = ch.pipeline().get(NbdTransmissionHandler.class);
                if (handler != null) {
                    handler.beginDrain();
                } else {
                    ch.close();
                }
            });
        }
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
        for (final Channel ch : open) {
            final long left = deadline - System.nanoTime();
            if (left <= 0 || !ch.closeFuture().await(left, TimeUnit.NANOSECONDS)) {
                LOG.warn("shutdown: {} did not finish its requests within {} ms; closing it", ch.remoteAddress(),
                    timeoutMillis);
                ch.close();
            }
        }
        connections.close().await(5, TimeUnit.SECONDS);
    }

    @Override
    public void close() {
        context.beginShutdown();
        for (final Channel listener : listeners) {
            listener.close();
        }
        connections.close().awaitUninterruptibly(5, TimeUnit.SECONDS);
        bossGroup.shutdownGracefully(0, 2, TimeUnit.SECONDS).awaitUninterruptibly();
        workerGroup.shutdownGracefully(0, 2, TimeUnit.SECONDS).awaitUninterruptibly();
    }
}
